"""Scenarios run with their policies replaced, as ``--mesh-policies`` does, and the failure they must end in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_meshcheck.backend import MeshBackend
from pytest_meshcheck.harness.chaos import Chaos
from pytest_meshcheck.harness.load import LoadDriver
from pytest_meshcheck.harness.policies import MeshPolicies
from pytest_meshcheck.harness.scenario import Scenario, ScenarioFailed
from pytest_meshcheck.policy import PolicySet
from pytest_meshcheck.settings import MeshSettings


@pytest.fixture
def scenario_with(
    request: pytest.FixtureRequest, mesh: MeshBackend, mesh_settings: MeshSettings, tmp_path: Path
) -> Iterator[Callable[[PolicySet], Scenario]]:
    """Build a Scenario whose ``policies.apply(...)`` applies the given set instead of the scenario's own."""
    made: list[tuple[Scenario, MeshPolicies, Chaos]] = []

    def make(user_policies: PolicySet) -> Scenario:
        policies = MeshPolicies(mesh, user_policies)
        chaos = Chaos(mesh, policies)
        load = LoadDriver(mesh)
        sc = Scenario(
            nodeid=request.node.nodeid, title=request.node.name, description="", mesh=mesh,
            settings=mesh_settings, policies=policies, chaos=chaos, load=load, report_dir=tmp_path,
        )  # fmt: skip
        load.listeners.append(sc.on_load)
        made.append((sc, policies, chaos))
        return sc

    yield make
    for _sc, policies, chaos in made:
        chaos.revert_all()
        policies.restore()


WeakenedRun = Callable[[PolicySet, Callable[[Scenario], None], str, str], ScenarioFailed]


@pytest.fixture
def fails_on_claim(scenario_with: Callable[[PolicySet], Scenario]) -> WeakenedRun:
    """Run ``scenario_fn`` under the weakened ``weak`` policies; it must fail on the ``intended`` claim.

    Every check that did not hold must be a claim about the mesh (role ``claim``): a weakening caught only by
    a model or evidence check would mean the scenario's claim could not see it. Returns the failure, for
    further checks of its message.
    """

    def run(weak: PolicySet, scenario_fn: Callable[[Scenario], None], intended: str, weakening: str) -> ScenarioFailed:
        sc = scenario_with(weak)

        def whole() -> None:
            scenario_fn(sc)
            if sc.declared.pending:  # a declarative scenario is verified when the test returns
                sc.verify()

        with pytest.raises(ScenarioFailed) as failure:
            whole()
        names = failure.value.check_names
        assert intended in names, (weakening, names, str(failure.value))
        assert all(c.role == "claim" for c in failure.value.checks), [(c.name, c.role) for c in failure.value.checks]
        return failure.value

    return run
