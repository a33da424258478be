"""Switching the plugin off (``-p no:meshcheck``) and deselecting its tests (``-m "not meshcheck"``).

Every test here runs without a mesh: a selected test that asked for ``mesh`` would start Envoy and
Prometheus (seconds, and visible in the outcome counts), so the counts prove nothing was started.
"""

from __future__ import annotations

import pytest

USES_FIXTURES = '''
import pytest

@pytest.fixture
def my_client(mesh):
    """A user fixture built on the mesh: its tests use the plugin too."""
    return mesh

def test_plain():
    pass

def test_uses_mesh(mesh):
    pass

def test_uses_chaos(mesh_chaos):
    pass

def test_uses_load_and_prom(mesh_load, mesh_prom):
    pass

def test_uses_scenario(mesh_scenario):
    pass

def test_uses_policies(mesh_policies):
    pass

def test_indirectly(my_client):
    pass
'''
MARKED = [
    "test_uses_mesh",
    "test_uses_chaos",
    "test_uses_load_and_prom",
    "test_uses_scenario",
    "test_uses_policies",
    "test_indirectly",
]


def test_not_meshcheck_deselects_every_test_that_uses_a_meshcheck_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=USES_FIXTURES)

    result = pytester.runpytest("-m", "not meshcheck", "--strict-markers")

    result.assert_outcomes(passed=1, deselected=len(MARKED))


def test_meshcheck_marker_selects_exactly_those_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=USES_FIXTURES)

    result = pytester.runpytest("-m", "meshcheck", "--collect-only", "-q")

    assert result.ret == pytest.ExitCode.OK
    collected = [line.split("::")[1] for line in result.stdout.lines if line.startswith("test_mixed.py::")]
    assert collected == MARKED


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_explicit="import pytest\n\n@pytest.mark.meshcheck\ndef test_marked():\n    pass\n",
    )

    markers = pytester.runpytest("--markers")
    run = pytester.runpytest("--strict-markers")

    markers.stdout.fnmatch_lines(["@pytest.mark.meshcheck: test uses pytest-meshcheck fixtures*"])
    run.assert_outcomes(passed=1)


def test_no_meshcheck_disables_options_fixtures_header_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=USES_FIXTURES)

    help_result = pytester.runpytest("-p", "no:meshcheck", "--help")
    option_result = pytester.runpytest("-p", "no:meshcheck", "--mesh-profile=smoke")
    run = pytester.runpytest("-p", "no:meshcheck", "-m", "not meshcheck")

    assert help_result.ret == pytest.ExitCode.OK
    assert "--mesh-" not in help_result.stdout.str()
    assert option_result.ret == pytest.ExitCode.USAGE_ERROR
    option_result.stderr.fnmatch_lines(["*unrecognized arguments: --mesh-profile=smoke*"])
    # Nothing is marked, so nothing is deselected; every fixture is unknown.
    run.assert_outcomes(passed=1, errors=len(MARKED))
    run.stdout.fnmatch_lines(["*fixture 'mesh' not found*"])
    assert "meshcheck:" not in run.stdout.str()


def test_plugin_is_registered_under_the_name_meshcheck(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()

    assert config.pluginmanager.has_plugin("meshcheck")
