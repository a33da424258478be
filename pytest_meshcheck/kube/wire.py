"""The agent's load API on the test-process side: the job it is sent, and the records it sends back.

A job names the URL inside the mesh (``http://order-service:8084/path``), the ``Host`` header, extra
headers and the profile; the agent validates it again with the same engine modules
(:func:`~pytest_meshcheck.load.request.build_request`, the profile classes) and runs it. The answer
holds the columns of :class:`~pytest_meshcheck.workload.agent_records.LoadRecords` as raw bytes, which
become numpy columns of a real :class:`~pytest_meshcheck.load.records.LoadRecords` here.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError
from pytest_meshcheck.kube.wait import wait_until
from pytest_meshcheck.load.profile import ClosedLoop, LoadError, OpenLoop
from pytest_meshcheck.load.records import LoadRecords
from pytest_meshcheck.load.request import build_request
from pytest_meshcheck.load.result import LoadResult


def profile_to_wire(profile: OpenLoop | ClosedLoop) -> dict[str, Any]:
    """The profile as the agent's JSON."""
    if isinstance(profile, OpenLoop):
        return {
            "kind": "open",
            "rate": profile.rate,
            "duration": profile.duration,
            "max_requests": profile.max_requests,
            "max_connections": profile.max_connections,
        }
    if isinstance(profile, ClosedLoop):
        return {
            "kind": "closed",
            "concurrency": profile.concurrency,
            "duration": profile.duration,
            "max_requests": profile.max_requests,
        }
    raise LoadError(f"profile: expected OpenLoop or ClosedLoop, got {type(profile).__name__}")


def load_job(
    url: str,
    profile: OpenLoop | ClosedLoop,
    *,
    host: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    timeout: float = 30.0,
    grace: float | None = None,
    record_headers: Sequence[str] = (),
) -> dict[str, Any]:
    """Validate a load request here (same rules as the local context) and encode it for the agent.

    Raises:
        LoadError: An argument is invalid; the message names it.
    """
    build_request(url, method=method, headers=headers, host=host, record_headers=record_headers)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
        raise LoadError(f"timeout: must be a finite number of seconds > 0, got {timeout!r}")
    if grace is None:
        grace = min(float(timeout), 5.0)
    return {
        "url": url,
        "host": host,
        "headers": dict(headers or {}),
        "method": method,
        "profile": profile_to_wire(profile),
        "timeout": float(timeout),
        "grace": float(grace),
        "record_headers": list(record_headers),
    }


def _column(packed: Mapping[str, str], byteorder: str, count: int, name: str) -> np.ndarray[Any, Any]:
    dtype_name = packed["dtype"]
    raw = base64.b64decode(packed["data"])
    if dtype_name == "b1":
        return np.frombuffer(raw, dtype=np.uint8).astype(np.bool_)
    dtype = np.dtype(dtype_name).newbyteorder("<" if byteorder == "little" else ">")
    column = np.frombuffer(raw, dtype=dtype).astype(np.dtype(dtype_name).newbyteorder("="))
    if len(column) != count:
        raise MeshSetupError(f"the load agent sent {len(column)} values for column {name!r}, expected {count}")
    return column


def records_from_wire(payload: Mapping[str, Any]) -> LoadRecords:
    """Rebuild numpy-backed records from the agent's ``records`` answer.

    Raises:
        MeshSetupError: The answer is malformed (an agent of another version).
    """
    try:
        count = int(payload["count"])
        order = str(payload["byteorder"])
        state: dict[str, Any] = {
            name: _column(packed, order, count, name) for name, packed in payload["columns"].items()
        }
        state.update(
            open_loop=bool(payload["open_loop"]),
            instances=list(payload["instances"]),
            header_names=tuple(payload["header_names"]),
            header_codes={h: _column(p, order, count, h) for h, p in payload["header_codes"].items()},
            header_values={h: list(v) for h, v in payload["header_values"].items()},
        )
        return LoadRecords.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise MeshSetupError(
            f"the load agent's answer is malformed ({type(exc).__name__}: {exc}); the agent ConfigMap may "
            "come from another pytest-meshcheck version: rerun to recreate the namespace"
        ) from exc


def result_from_wire(profile: OpenLoop | ClosedLoop, answer: Mapping[str, Any]) -> LoadResult:
    """The :class:`LoadResult` of an agent answer.

    The agent's ``started_monotonic`` is on the pod's clock; it is moved onto this process's
    ``time.monotonic()`` through the wall clocks (nodes and this machine are assumed NTP-synced).
    """
    records = records_from_wire(answer["records"])
    started_wall = float(answer["started_wall"])
    started_monotonic = started_wall + (time.monotonic() - time.time())
    return LoadResult(profile, records, started_monotonic, started_wall, str(answer.get("event_loop", "")))


def _error(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text))
    except ValueError:
        return resp.text.strip()[:300]


def run_job(http: httpx.Client, job: Mapping[str, Any], *, budget: float, interval: float = 0.25) -> dict[str, Any]:
    """Start a load job on the agent and poll until its answer arrives.

    The run is started and collected in separate short requests, so no connection stays idle for the
    whole run (load balancers in front of API servers cut idle streams).

    Args:
        http: Client whose ``base_url`` is the agent.
        job: From :func:`load_job`.
        budget: Seconds allowed for the whole run, answer included.
        interval: Seconds between polls.

    Raises:
        LoadError: The agent refused the job as invalid (400).
        MeshTimeoutError: No answer within ``budget``.
        MeshSetupError: The agent is unreachable, busy, or the run failed.
    """
    try:
        resp = http.post("/load", json=dict(job))
    except httpx.HTTPError as exc:
        raise MeshSetupError(f"the load agent is unreachable: {exc}") from exc
    if resp.status_code == 400:
        raise LoadError(_error(resp))
    if resp.status_code != 202:
        raise MeshSetupError(f"the load agent refused the job: HTTP {resp.status_code}: {_error(resp)}")
    job_id = str(resp.json()["job"])
    answer: dict[str, Any] = {}

    def check() -> tuple[bool, object]:
        try:
            poll = http.get(f"/load/{job_id}")
        except httpx.HTTPError as exc:
            return False, f"poll failed: {exc}"
        if poll.status_code == 202:
            return False, f"running for {poll.json().get('elapsed', 0):.1f}s"
        if poll.status_code != 200:
            raise MeshSetupError(f"load job {job_id} on the agent failed: HTTP {poll.status_code}: {_error(poll)}")
        answer.update(poll.json())
        return True, "done"

    try:
        wait_until(check, timeout=budget, description=f"load job {job_id} on the agent", interval=interval)
    except MeshTimeoutError as exc:
        raise MeshTimeoutError(f"{exc}; the agent pod may be overloaded or restarting") from exc
    return answer
