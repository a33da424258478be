"""The plugin keeps to its namespace: prefixed fixtures, a header only when used, warnings, clean unconfigure.

None of these start a mesh: they check fixture resolution (``--setup-plan``), what pytest prints, and
the plugin's registrations. The policy-warning test applies policies to an in-memory stand-in for the
mesh (pure plumbing: nothing runs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pytest_meshcheck import MeshcheckWarning
from pytest_meshcheck.harness.policies import MeshPolicies
from pytest_meshcheck.policy import PolicySet
from pytest_meshcheck.topology import load_topology

USER_FIXTURES = """
import pytest

@pytest.fixture
def load():
    return "the user's load"

@pytest.fixture
def chaos():
    return "the user's chaos"

@pytest.fixture
def scenario():
    return "the user's scenario"

@pytest.fixture
def prom():
    return "the user's prom"
"""

TESTS = """
def test_own_fixtures(load, chaos, scenario, prom):
    assert (load, chaos, scenario, prom) == (
        "the user's load", "the user's chaos", "the user's scenario", "the user's prom"
    )

def test_scenario(mesh_scenario, load):
    pass
"""


def test_a_projects_own_load_and_chaos_fixtures_do_not_replace_ours(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(USER_FIXTURES)
    pytester.makepyfile(test_user=TESTS)

    own = pytester.runpytest("-k", "own_fixtures", "-p", "no:cacheprovider")
    own.assert_outcomes(passed=1)

    plan = pytester.runpytest("--setup-plan", "-k", "test_scenario", "-p", "no:cacheprovider")
    for ours in ("mesh_load", "mesh_chaos", "mesh_scenario"):
        plan.stdout.fnmatch_lines([f"*SETUP    F {ours}*"])
    # The user's `load` is set up for the test that asked for it, beside ours, not instead of it.
    plan.stdout.fnmatch_lines(["*SETUP    F load", "*fixtures used: load, mesh, mesh_chaos, mesh_load*"])


def test_the_header_line_appears_only_when_a_test_uses_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    plain = pytester.runpytest("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=1)
    assert not [line for line in plain.outlines if line.startswith("meshcheck: context=")]

    pytester.makepyfile(test_mesh="def test_mesh(mesh):\n    pass\n")
    used = pytester.runpytest("--collect-only", "-p", "no:cacheprovider")
    used.stdout.fnmatch_lines(["meshcheck: context=local*alpha=2e-05 beta=0.05*"])


def test_the_tracker_is_unregistered_at_unconfigure(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    assert config.pluginmanager.get_plugin("meshcheck-scenario-tracker") is not None
    config._ensure_unconfigure()
    assert config.pluginmanager.get_plugin("meshcheck-scenario-tracker") is None


class InMemoryMesh:
    """The two things MeshPolicies needs of a backend: its topology and somewhere to apply policies."""

    def __init__(self) -> None:
        self.topology = load_topology()
        self.policies = PolicySet()

    def apply(self, policies: PolicySet) -> float:
        self.policies = self.policies.merged(policies)
        return 0.0


DEPRECATED = """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: order-breaker, namespace: platform-core}
spec:
  host: order-service
  trafficPolicy:
    outlierDetection:
      consecutiveErrors: 5
      interval: 30s
      baseEjectionTime: 30s
"""


def test_policy_warnings_are_python_warnings_so_w_error_works(tmp_path: Path) -> None:
    policies = MeshPolicies(InMemoryMesh())  # type: ignore[arg-type]
    with pytest.warns(MeshcheckWarning, match="consecutiveErrors"):
        policies.apply(DEPRECATED)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeshcheckWarning)
        with pytest.raises(MeshcheckWarning):
            MeshPolicies(InMemoryMesh()).apply(DEPRECATED)  # type: ignore[arg-type]
