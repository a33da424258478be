"""A factory of scenario objects whose built-in policies are replaced, as ``--mesh-policies`` does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_meshcheck.backend import MeshBackend
from pytest_meshcheck.harness.chaos import Chaos
from pytest_meshcheck.harness.load import LoadDriver
from pytest_meshcheck.harness.policies import MeshPolicies
from pytest_meshcheck.harness.scenario import Scenario
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
