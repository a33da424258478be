"""Typed client for the echo workload's admin API (``/chaos``, ``/stats``, ``/metrics``, ``/healthz``).

Example::

    with EchoAdmin("http://127.0.0.1:41234") as admin:
        admin.set_chaos(error=ErrorFault(status=503, probability=0.5))
        before = admin.stats()
        ...  # drive traffic
        assert admin.stats().faults_injected["error"] > before.faults_injected["error"]
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from pytest_meshcheck.errors import ChaosError
from pytest_meshcheck.workload.echo.chaos import Chaos, ErrorFault, LatencyFault, ResetFault, parse_chaos

__all__ = [
    "Chaos",
    "ChaosState",
    "EchoAdmin",
    "EchoStats",
    "ErrorFault",
    "LatencyFault",
    "ResetFault",
]


@dataclass(frozen=True)
class ChaosState:
    """The chaos in force on one replica and its generation (increments on every change)."""

    chaos: Chaos
    generation: int


@dataclass(frozen=True)
class EchoStats:
    """Counters of one replica (``GET /stats``); all counts are since the process started.

    Attributes:
        requests_received: Requests read on the serving port, resets included.
        responses_total: Responses sent; ``responses_by_status`` splits them by status code.
        faults_injected: Per chaos fault (``error``, ``delay``, ``reset``).
        query_overrides: Per query override (``codes``, ``delay``, ``headers``).
        override_requests: Requests that used at least one query override.
        abandoned: Delayed requests whose client hung up before the response.
        connections: Connections accepted on the serving port.
    """

    service: str
    version: str
    instance: str
    namespace: str
    pid: int
    seed: int
    requests_received: int
    responses_total: int
    responses_by_status: dict[int, int]
    faults_injected: dict[str, int]
    query_overrides: dict[str, int]
    override_requests: int
    abandoned: int
    connections: int
    chaos_generation: int
    chaos: Chaos

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EchoStats:
        """Build from the ``GET /stats`` document."""
        return cls(
            service=doc["service"],
            version=doc["version"],
            instance=doc["instance"],
            namespace=doc["namespace"],
            pid=int(doc["pid"]),
            seed=int(doc["seed"]),
            requests_received=int(doc["requests_received"]),
            responses_total=int(doc["responses_total"]),
            responses_by_status={int(k): int(v) for k, v in doc["responses_by_status"].items()},
            faults_injected={k: int(v) for k, v in doc["faults_injected"].items()},
            query_overrides={k: int(v) for k, v in doc["query_overrides"].items()},
            override_requests=int(doc["override_requests"]),
            abandoned=int(doc["abandoned"]),
            connections=int(doc["connections"]),
            chaos_generation=int(doc["chaos_generation"]),
            chaos=parse_chaos(doc["chaos"]),
        )


class EchoAdmin:
    """Client of one echo replica's admin port.

    Args:
        base_url: Such as ``http://127.0.0.1:41234``.
        timeout: Seconds per call.
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> EchoAdmin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def set_chaos(
        self,
        chaos: Chaos | None = None,
        *,
        error: ErrorFault | None = None,
        latency: LatencyFault | None = None,
        reset: ResetFault | None = None,
    ) -> ChaosState:
        """Replace the whole chaos state (sections not given are turned off).

        Pass either a ``Chaos`` or the sections as keywords.

        Raises:
            ChaosError: The replica rejected the state or could not be reached.
        """
        if chaos is not None and (error or latency or reset):
            raise TypeError("set_chaos takes either a Chaos or error=/latency=/reset= keywords, not both")
        state = chaos if chaos is not None else Chaos(error=error, latency=latency, reset=reset)
        return self._chaos_state(self._call("PUT", "/chaos", "set chaos", json=state.to_json()))

    def clear_chaos(self) -> ChaosState:
        """Turn every fault off.

        Raises:
            ChaosError: The replica could not be reached.
        """
        return self._chaos_state(self._call("DELETE", "/chaos", "clear chaos"))

    def get_chaos(self) -> ChaosState:
        """The chaos state in force."""
        return self._chaos_state(self._call("GET", "/chaos", "read chaos"))

    def stats(self) -> EchoStats:
        """The replica's counters."""
        return EchoStats.from_json(self._call("GET", "/stats", "read stats").json())

    def metrics_text(self) -> str:
        """The Prometheus text exposition of the same counters."""
        return self._call("GET", "/metrics", "read metrics").text

    def healthy(self) -> bool:
        """Whether ``GET /healthz`` answers 200; never raises."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def _call(self, method: str, path: str, what: str, json: Any = None) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ChaosError(f"could not {what} on echo admin {self.base_url}: {exc}") from exc
        if response.status_code != 200:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ChaosError(f"echo admin {self.base_url} refused to {what} (HTTP {response.status_code}): {message}")
        return response

    @staticmethod
    def _chaos_state(response: httpx.Response) -> ChaosState:
        doc = response.json()
        return ChaosState(chaos=parse_chaos(doc["chaos"]), generation=int(doc["generation"]))
