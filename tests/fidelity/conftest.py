"""One local mesh per Istio version, started on first use and shared by every example of the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_meshcheck.local.mesh import LocalMesh
from tests.fidelity.cases import topology


class Meshes:
    """Local meshes keyed by Istio version (the translation differs per version); each is started once."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._meshes: dict[str, LocalMesh] = {}

    def get(self, istio: str) -> LocalMesh:
        """The running mesh for ``istio``, started (in about half a second) on first use."""
        if istio not in self._meshes:
            mesh = LocalMesh(topology=topology(), istio_version=istio, prometheus=False, seed=self.seed)
            mesh.start()
            self._meshes[istio] = mesh
        return self._meshes[istio]

    def stop(self) -> None:
        """Stop every mesh started (each reverts its chaos and stops its processes by PID)."""
        for mesh in self._meshes.values():
            mesh.stop()
        self._meshes.clear()


@pytest.fixture(scope="session")
def fidelity_meshes() -> Iterator[Meshes]:
    """Meshes for the fidelity suite, stopped at the end of the session."""
    meshes = Meshes(seed=1234)
    try:
        yield meshes
    finally:
        meshes.stop()
