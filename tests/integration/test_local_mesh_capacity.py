"""A topology too large for the machine is refused by ``LocalMesh.start()`` before it starts any process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from _proc_helpers import children as _children

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.local import process as proc_mod
from pytest_meshcheck.local.capacity import estimate
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.topology import load_topology


@pytest.fixture
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state root, so "nothing was created" can be checked while other meshes run."""
    root = tmp_path / "state"
    root.mkdir()
    monkeypatch.setattr(proc_mod, "state_root", lambda: root)
    return root


def test_a_huge_topology_fails_with_its_needs_and_starts_no_process(isolated_state: Path, tmp_path: Path) -> None:
    # 1000 services x 20 replicas, every other calling the next: 10,000 pod sidecars holding 2000 clusters each
    # (terabytes), beyond any machine.
    services = [
        {
            "name": f"svc-{i:04d}",
            "port": 8080,
            "versions": [{"name": "v1", "replicas": 20}],
            **({"calls": [{"service": f"svc-{i + 1:04d}"}]} if i % 2 == 0 else {}),
        }
        for i in range(1000)
    ]
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump({"namespace": "huge", "services": services}))
    topology = load_topology(path)
    need = estimate(topology)
    before = _children(os.getpid())
    mesh = LocalMesh(topology=topology)
    with pytest.raises(MeshSetupError) as info:
        mesh.start()
    msg = str(info.value)
    assert msg.startswith(f"{path}: this topology is too large for this machine: 1000 services, 20000 instances")
    assert f"about {need.memory_mb:,.0f} MB of memory and {need.max_fds:,} file descriptors" in msg
    assert "MemAvailable" in msg
    assert "fewer services or replicas" in msg
    assert not mesh.running
    assert _children(os.getpid()) == before
    assert list(isolated_state.iterdir()) == []
