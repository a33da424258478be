"""Entry points: run a load profile against an Envoy listener, in a child process or in this one."""

from __future__ import annotations

import asyncio
import atexit
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError
from pytest_meshcheck.load.engine import run_in_loop
from pytest_meshcheck.load.profile import ClosedLoop, LoadError, OpenLoop
from pytest_meshcheck.load.records import LoadRecords
from pytest_meshcheck.load.request import RequestSpec, build_request
from pytest_meshcheck.load.result import LoadResult

_STARTUP_ALLOWANCE = 60.0  # seconds for the child to start and ship its records, on top of the run itself


def _job(
    url: str,
    profile: OpenLoop | ClosedLoop,
    headers: Mapping[str, str] | None,
    host: str | None,
    method: str,
    timeout: float,
    grace: float | None,
    record_headers: Sequence[str],
) -> dict[str, Any]:
    if not isinstance(profile, OpenLoop | ClosedLoop):
        raise LoadError(f"profile: expected OpenLoop or ClosedLoop, got {type(profile).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
        raise LoadError(f"timeout: must be a finite number of seconds > 0, got {timeout!r}")
    if grace is None:
        grace = min(float(timeout), 5.0)
    elif isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace < float("inf"):
        raise LoadError(f"grace: must be a finite number of seconds >= 0, got {grace!r}")
    spec = build_request(url, method=method, headers=headers, host=host, record_headers=record_headers)
    return {"spec": spec, "profile": profile, "timeout": float(timeout), "grace": float(grace)}


def _child_command() -> tuple[list[str], dict[str, str]]:
    # The child must import this very package, even when it is only on sys.path (pytest rootdir, a checkout).
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "pytest_meshcheck.load._worker"], env


def _limit(job: Mapping[str, Any]) -> float:
    return float(job["profile"].duration + job["grace"] + _STARTUP_ALLOWANCE)


def _result(job: Mapping[str, Any], payload: bytes) -> LoadResult:
    state, started, wall, event_loop = pickle.loads(payload)
    return LoadResult(job["profile"], LoadRecords.from_state(state), started, wall, event_loop)


def _child_failed(returncode: int | None, stderr: bytes) -> MeshSetupError:
    return MeshSetupError(
        f"load engine child process failed with exit code {returncode}",
        log_tail=stderr.decode(errors="replace"),
    )


def _spawn() -> subprocess.Popen[bytes]:
    command, env = _child_command()
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


class _Spare:
    """One idle engine child, started when a load phase ends, so the next phase finds its interpreter ready.

    Starting a child costs about 0.2 s (Python, the engine, uvloop): a scenario with five load phases waited
    a second for it. The spare waits on its stdin; it is killed at exit, and if this process dies first its
    stdin closes and it exits on its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.discard)

    def take(self) -> subprocess.Popen[bytes]:
        """The spare child if it is still alive, else a new one."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            return proc
        return _spawn()

    def prepare(self) -> None:
        """Start the spare for the next phase (no-op when one is waiting)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = _spawn()

    def discard(self) -> None:
        """Stop the spare by PID (at exit, and in tests)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


_SPARE = _Spare()


def _run_child(job: Mapping[str, Any]) -> LoadResult:
    proc = _SPARE.take()
    try:
        out, err = proc.communicate(pickle.dumps(dict(job)), timeout=_limit(job))
    except subprocess.TimeoutExpired:
        raise MeshTimeoutError(
            f"load engine child process (pid {proc.pid}) still running {_limit(job):.0f}s after start; killed"
        ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _SPARE.prepare()
    if proc.returncode != 0:
        raise _child_failed(proc.returncode, err)
    return _result(job, out)


async def _run_child_async(job: Mapping[str, Any]) -> LoadResult:
    command, env = _child_command()
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(pickle.dumps(dict(job))), _limit(job))
    except TimeoutError:
        raise MeshTimeoutError(
            f"load engine child process (pid {proc.pid}) still running {_limit(job):.0f}s after start; killed"
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise _child_failed(proc.returncode, err)
    return _result(job, out)


async def _run_here(job: Mapping[str, Any]) -> LoadResult:
    spec: RequestSpec = job["spec"]
    outcome = await run_in_loop(spec, job["profile"], timeout=job["timeout"], grace=job["grace"])
    return LoadResult(job["profile"], *outcome)


def run_load(
    url: str,
    profile: OpenLoop | ClosedLoop,
    *,
    headers: Mapping[str, str] | None = None,
    host: str | None = None,
    method: str = "GET",
    timeout: float = 30.0,
    grace: float | None = None,
    record_headers: Sequence[str] = (),
    isolate: bool = True,
) -> LoadResult:
    """Send the load ``profile`` to ``url`` and return every request's record.

    The run stops starting requests at ``profile.duration`` or ``profile.max_requests``, whichever comes
    first; requests still in flight then get ``grace`` seconds and are then recorded as ``cancelled``.

    Args:
        url: The Envoy listener, e.g. ``http://127.0.0.1:15001/path``.
        profile: :class:`OpenLoop` or :class:`ClosedLoop`.
        headers: Extra request headers.
        host: ``Host`` header selecting the service (``order-service``); default: the URL's authority.
        method: HTTP method; requests carry no body.
        timeout: Per-request limit in seconds, on the recorded latency; beyond it the request is recorded as
            status 0, error ``timeout``.
        grace: Seconds granted after ``duration`` to requests in flight; default ``min(timeout, 5)``.
        record_headers: Response headers to keep per request, besides ``x-meshcheck-instance``,
            ``x-envoy-attempt-count`` and ``x-envoy-overloaded``.
        isolate: Run the engine in a child process (default), so it has its own core and event loop.
            ``False`` runs it in a new event loop in this thread.

    Returns:
        The records and their summaries.

    Raises:
        LoadError: An argument is invalid.
        MeshSetupError: The engine's child process failed.
    """
    job = _job(url, profile, headers, host, method, timeout, grace, record_headers)
    if isolate:
        return _run_child(job)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run_here(job))
    raise LoadError("run_load(isolate=False) cannot run inside a running event loop; await run_load_async() instead")


async def run_load_async(
    url: str,
    profile: OpenLoop | ClosedLoop,
    *,
    headers: Mapping[str, str] | None = None,
    host: str | None = None,
    method: str = "GET",
    timeout: float = 30.0,
    grace: float | None = None,
    record_headers: Sequence[str] = (),
    isolate: bool = True,
) -> LoadResult:
    """Async form of :func:`run_load`; with ``isolate=False`` the engine runs in the caller's event loop."""
    job = _job(url, profile, headers, host, method, timeout, grace, record_headers)
    if isolate:
        return await _run_child_async(job)
    return await _run_here(job)
