"""Child processes that are always stopped by PID, and swept if a previous run was killed.

Three layers keep the machine clean:

1. :class:`ProcessGroup` stops every child it started (SIGTERM, then SIGKILL) on ``close()``, which the
   mesh calls on exit, on exceptions and on Ctrl-C.
2. Each child gets ``PR_SET_PDEATHSIG`` = SIGKILL on Linux, so when the parent dies by SIGKILL (no chance
   to run ``close()``) the kernel ends the children at once.
3. Each group keeps a state file listing its children with their kernel start times. The next group to
   start sweeps state files whose owner is gone and kills the listed PIDs that still belong to the same
   processes (same start time), so a recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.procfs import proc_alive, proc_start_time

_PR_SET_PDEATHSIG = 1


def state_root() -> Path:
    """Directory holding one state file per live process group (per user)."""
    return Path(tempfile.gettempdir()) / f"pytest-meshcheck-{os.getuid()}"


def _set_parent_death_signal() -> None:
    # Runs in the child between fork and exec. Linux only; elsewhere layer 3 still sweeps leftovers.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold Ctrl-C while a child is forked and recorded, and deliver it right after.

    A KeyboardInterrupt between fork and recording would leave a child nobody stops, and one raised
    in Python's at-fork hooks is swallowed ("Exception ignored in ... _releaseLock"), losing the Ctrl-C.
    Only the main thread receives signals; elsewhere there is nothing to defer.
    """
    # A handler installed outside Python (getsignal() is None) could not be put back: leave it alone.
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


@dataclass
class ManagedProcess:
    """A child process started by a :class:`ProcessGroup`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    start_time: int | None

    @property
    def pid(self) -> int:
        """The child's PID."""
        return self.popen.pid

    def running(self) -> bool:
        """True while the child has not exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """Starts children, records them in a state file and stops them all by PID.

    Args:
        label: Short description for messages (``"local mesh"``).
        work_dir: Directory of this group's files (logs, configs, data); removed by :meth:`close`
            unless ``keep`` is true.
        keep: Leave ``work_dir`` in place on close (debugging, ``--mesh-keep``).
    """

    def __init__(self, label: str, work_dir: Path, *, keep: bool = False) -> None:
        self.label = label
        self.work_dir = work_dir
        self.keep = keep
        self.processes: list[ManagedProcess] = []
        self._state_file = state_root() / f"{os.getpid()}-{id(self):x}.json"
        self._closed = False

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` with its stderr (and stdout unless piped) in ``<work_dir>/<name>.log``.

        Raises:
            MeshSetupError: The executable does not exist or cannot run.
        """
        with _ctrl_c_deferred():
            return self._start(name, argv, env, stdout_pipe)

    def _start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None, stdout_pipe: bool
    ) -> ManagedProcess:
        log_path = self.work_dir / f"{name}.log"
        log: IO[bytes] = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=dict(env) if env is not None else None,
                # A new session keeps the terminal's Ctrl-C away from children: we stop them ourselves,
                # in order, after the parent has handled KeyboardInterrupt.
                start_new_session=True,
                # Only prctl runs between fork and exec, so the thread-safety caveat does not bite.
                preexec_fn=_set_parent_death_signal,  # noqa: PLW1509
            )
        except OSError as exc:
            raise MeshSetupError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc
        finally:
            log.close()
        proc = ManagedProcess(name, popen, log_path, proc_start_time(popen.pid))
        self.processes.append(proc)
        self._write_state()
        return proc

    def _write_state(self) -> None:
        root = state_root()
        root.mkdir(parents=True, exist_ok=True)
        state = {
            "label": self.label,
            "owner_pid": os.getpid(),
            "owner_start": proc_start_time(os.getpid()),
            "work_dir": str(self.work_dir),
            "keep": self.keep,
            "children": [
                {"name": p.name, "pid": p.pid, "start": p.start_time, "argv0": str(p.popen.args[0])}  # type: ignore[index]
                for p in self.processes
            ],
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_file)

    def stop(self, proc: ManagedProcess, timeout: float = 3.0) -> None:
        """Stop one child: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(5)
        if proc.popen.stdout is not None:
            proc.popen.stdout.close()

    def close(self) -> None:
        """Stop every child (in reverse start order), remove the state file and, unless kept, the work dir."""
        if self._closed:
            return
        self._closed = True
        # Signal all first and wait after, so shutdown takes one timeout, not one per child.
        for proc in reversed(self.processes):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for proc in reversed(self.processes):
            try:
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(5)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
        self._state_file.unlink(missing_ok=True)
        if not self.keep:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def sweep_leftovers(log: Callable[[str], None] | None = None) -> list[str]:
    """Kill children of process groups whose owner is gone, and remove their files.

    Returns:
        One line per thing removed, such as ``killed envoy pid 4242 (local mesh of pid 4200, gone)``;
        the same lines are passed to ``log``.
    """
    removed: list[str] = []
    root = state_root()
    if not root.is_dir():
        return removed
    for state_file in sorted(root.glob("*.json")):
        try:
            state = json.loads(state_file.read_text())
            owner, owner_start = int(state["owner_pid"]), state.get("owner_start")
        except (OSError, ValueError, KeyError, TypeError):
            state_file.unlink(missing_ok=True)
            continue
        if proc_alive(owner, owner_start):
            continue
        for child in state.get("children", []):
            pid, start = int(child["pid"]), child.get("start")
            if proc_alive(pid, start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                removed.append(f"killed {child['name']} pid {pid} ({state.get('label')} of pid {owner}, gone)")
        work_dir = Path(state.get("work_dir", ""))
        if work_dir.is_dir() and not state.get("keep") and work_dir.is_relative_to(root):
            shutil.rmtree(work_dir, ignore_errors=True)
            removed.append(f"removed {work_dir}")
        state_file.unlink(missing_ok=True)
    for line in removed:
        if log is not None:
            log(line)
    return removed


def new_work_dir(prefix: str = "mesh-") -> Path:
    """A fresh directory under :func:`state_root` for one mesh's files."""
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
