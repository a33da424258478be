"""No residue: children are stopped by PID, die with a SIGKILLed parent, and leftovers are swept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _proc_helpers import alive as _alive
from _proc_helpers import wait_dead as _wait_dead

from pytest_meshcheck.local import process as proc_mod
from pytest_meshcheck.local.process import ProcessGroup, new_work_dir, sweep_leftovers
from pytest_meshcheck.procfs import proc_start_time


@pytest.fixture
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    root.mkdir()
    monkeypatch.setattr(proc_mod, "state_root", lambda: root)
    return root


def test_close_stops_every_child_and_removes_files(isolated_state: Path) -> None:
    group = ProcessGroup("test", new_work_dir())
    children = [group.start(f"sleep{i}", ["sleep", "60"]) for i in range(3)]
    assert all(_alive(c.pid) for c in children)
    assert len(list(isolated_state.glob("*.json"))) == 1
    group.close()
    assert all(not _alive(c.pid) for c in children)
    assert not group.work_dir.exists()
    assert list(isolated_state.glob("*.json")) == []
    group.close()  # idempotent


def test_child_ignoring_sigterm_is_killed(isolated_state: Path) -> None:
    group = ProcessGroup("test", new_work_dir())
    stubborn = group.start(
        "stubborn",
        [sys.executable, "-c", "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"],
    )
    time.sleep(0.2)  # let it install the handler
    t0 = time.monotonic()
    group.close()
    assert not _alive(stubborn.pid)
    assert time.monotonic() - t0 < 6


def test_missing_executable_is_a_clear_error(isolated_state: Path) -> None:
    from pytest_meshcheck.errors import MeshSetupError

    group = ProcessGroup("test", new_work_dir())
    with pytest.raises(MeshSetupError, match="cannot start nothing-here"):
        group.start("nothing-here", ["/nonexistent/binary"])
    group.close()


def test_children_die_with_a_sigkilled_parent(isolated_state: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pytest_meshcheck.local import process as p
        p.state_root = lambda: Path({str(isolated_state)!r})
        g = p.ProcessGroup("orphan test", p.new_work_dir())
        kids = [g.start(f"k{{i}}", ["sleep", "60"]).pid for i in range(2)]
        print(" ".join(map(str, kids)), flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        kids = [int(x) for x in parent.stdout.readline().split()]
        assert len(kids) == 2
        assert all(_alive(k) for k in kids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        # PR_SET_PDEATHSIG: the kernel kills them as soon as the parent is gone.
        assert all(_wait_dead(k, 2.0) for k in kids)
        # The state file stays behind (the parent had no chance to clean up); the next sweep removes it.
        assert len(list(isolated_state.glob("*.json"))) == 1
        removed = sweep_leftovers()
        assert any("removed" in line for line in removed)
        assert list(isolated_state.glob("*.json")) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_sweep_kills_leftovers_of_a_dead_owner_and_says_so(isolated_state: Path) -> None:
    # A leftover that survived its owner (for example started without the parent-death signal).
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        dead_owner = subprocess.Popen(["true"])
        dead_owner.wait()
        work = new_work_dir()
        (work / "envoy.log").write_text("x")
        state = {
            "label": "local mesh",
            "owner_pid": dead_owner.pid,
            "owner_start": 1,
            "work_dir": str(work),
            "children": [{"name": "envoy", "pid": leftover.pid, "start": proc_start_time(leftover.pid)}],
        }
        (isolated_state / "stale.json").write_text(json.dumps(state))
        messages: list[str] = []
        removed = sweep_leftovers(messages.append)
        assert f"killed envoy pid {leftover.pid} (local mesh of pid {dead_owner.pid}, gone)" in removed
        assert messages == removed
        assert leftover.wait(3) == -signal.SIGKILL
        assert not work.exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_sweep_never_kills_a_recycled_pid(isolated_state: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = proc_start_time(bystander.pid)
        assert start is not None
        state = {
            "label": "local mesh",
            "owner_pid": 2**22 + 17,  # no such process
            "owner_start": 1,
            "work_dir": "",
            # Same PID, different start time: the PID was reused by an unrelated process.
            "children": [{"name": "envoy", "pid": bystander.pid, "start": start + 1}],
        }
        (isolated_state / "stale.json").write_text(json.dumps(state))
        assert sweep_leftovers() == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_sweep_leaves_live_owners_alone(isolated_state: Path) -> None:
    group = ProcessGroup("live", new_work_dir())
    child = group.start("sleep", ["sleep", "60"])
    try:
        assert sweep_leftovers() == []
        assert _alive(child.pid)
    finally:
        group.close()
    assert os.path.exists(isolated_state)
