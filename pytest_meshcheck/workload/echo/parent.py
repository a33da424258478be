"""Exiting with the parent: a replica started with ``--parent-pid`` stops once that process is gone.

Two mechanisms: ``PR_SET_PDEATHSIG`` makes the common case immediate on Linux, and a poll of ``/proc``
is the guarantee (it also sees a parent that is a zombie, or a new process that reused its pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys

from pytest_meshcheck.procfs import proc_stat

#: Seconds between two looks at the parent.
PARENT_POLL_S = 0.2


def parent_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether process ``pid`` still runs: not gone, not a zombie, and not a new process reusing the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    # A SIGKILLed parent stays a zombie until its own parent reaps it; kill(pid, 0) still succeeds then.
    if state in ("Z", "X"):
        return False
    return start_ticks is None or start == start_ticks


def set_parent_death_signal(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM when the parent exits (no-op elsewhere, or when it is not our parent)."""
    # PR_SET_PDEATHSIG fires when the *thread* that forked us exits, and only for our direct parent; the
    # /proc poll in watch_parent is the guarantee, this just makes the common case immediate.
    if not sys.platform.startswith("linux") or os.getppid() != parent_pid:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


async def watch_parent(pid: int, start_ticks: int | None, stop: asyncio.Event) -> None:
    """Set ``stop`` once process ``pid`` (started at ``start_ticks``) is gone; polls every ``PARENT_POLL_S``."""
    while parent_alive(pid, start_ticks):
        await asyncio.sleep(PARENT_POLL_S)
    print(f"echo: parent process {pid} is gone; exiting", file=sys.stderr, flush=True)
    stop.set()
