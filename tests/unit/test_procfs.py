"""Telling a process from a later one that reuses its PID, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from pytest_meshcheck.procfs import proc_alive, proc_start_time, proc_stat


def test_this_process_is_alive_with_its_own_start_time() -> None:
    started = proc_start_time(os.getpid())
    assert started is not None
    assert proc_alive(os.getpid(), started)
    assert not proc_alive(os.getpid(), started + 1)


def test_a_reaped_process_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    assert proc_stat(proc.pid) == ("X", 0)
    assert proc_start_time(proc.pid) is None
    assert not proc_alive(proc.pid)
