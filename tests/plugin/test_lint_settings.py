"""``pytest --mesh-lint`` judges the run's platform: the topology and Istio version of the run's settings.

The same policy gives different findings on different platforms: ``orders-api`` is unknown to the packaged
topology (MC180) and, from Istio 1.24, ``retries`` without ``retryOn`` no longer retries 503 (MC111). Each
spelling of the settings (CLI, environment, ini) must reach the lint items, as it reaches scenarios.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pytest_meshcheck.plugin

# Until plugin.py wires the lint collector, a conftest does (as in test_lint_cli.py).
_WIRED = "mesh_lint" in Path(pytest_meshcheck.plugin.__file__).read_text(encoding="utf-8")

POLICY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders-api]
  http:
  - route:
    - destination: {host: orders-api}
    retries: {attempts: 2}
"""
TOPOLOGY = """\
namespace: shop
services:
- name: orders-api
  port: 8080
  versions: [{name: v1, replicas: 2}]
"""
ARGS = ("--mesh-lint", "--mesh-lint-fail-on", "note", "-p", "no:cacheprovider", "-p", "no:randomly")


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    if not _WIRED:
        pytester.makeconftest(
            "from pytest_meshcheck.lint.pytest_items import collect_lint_file\n\n"
            "def pytest_collect_file(file_path, parent):\n"
            "    return collect_lint_file(file_path, parent)\n"
        )
    for name in ("PYTEST_MESHCHECK_TOPOLOGY", "PYTEST_MESHCHECK_ISTIO_VERSION"):
        monkeypatch.delenv(name, raising=False)
    pytester.makefile(".yaml", orders=POLICY)
    (pytester.path / "platform").mkdir()
    (pytester.path / "platform" / "topology.yml").write_text(TOPOLOGY, encoding="utf-8")
    return pytester


def test_defaults_judge_the_packaged_platform(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*note MC180 host 'orders-api' is not a service of topology*", "*MC111*Istio 1.30*"])


def test_ini_topology_and_istio_version_reach_the_lint_items(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nmesh_topology = platform/topology.yml\nmesh_istio_version = 1.23\n")
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1)


def test_ini_topology_alone_leaves_the_version_finding(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nmesh_topology = platform/topology.yml\n")
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MC111*Istio 1.30*"])
    result.stdout.no_fnmatch_line("*MC180*")


def test_cli_and_environment_reach_the_lint_items(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_MESHCHECK_ISTIO_VERSION", "1.23")
    result = project.runpytest_subprocess(*ARGS, "--mesh-topology", "platform/topology.yml")
    result.assert_outcomes(passed=1)


def test_bad_setting_is_a_usage_error_naming_the_option(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nmesh_istio_version = 1.2x\n")
    result = project.runpytest_subprocess(*ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mesh_istio_version*"])
