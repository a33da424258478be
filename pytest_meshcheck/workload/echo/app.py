"""The serving-port handler: chaos, then the query overrides, then the dependency calls, then the identity.

The answer is the replica's identity as JSON, with the calls' statuses and the failed hop when there are calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
from json.encoder import encode_basestring_ascii
from typing import Any

from pytest_meshcheck.workload.echo.calls import FAILED_HOP_HEADER, CallResult, CallSpec, Outbound
from pytest_meshcheck.workload.echo.chaos import Chaos, roll
from pytest_meshcheck.workload.echo.connection import HttpConnection, Request
from pytest_meshcheck.workload.echo.ledger import Ledger
from pytest_meshcheck.workload.echo.metrics import metrics_text
from pytest_meshcheck.workload.echo.overrides import parse_overrides, pick_code
from pytest_meshcheck.workload.echo.replica import Counters, Identity


class EchoApp:
    """The serving-port handler: chaos, query overrides, identity response."""

    def __init__(
        self,
        identity: Identity,
        rng: random.Random,
        seed: int,
        *,
        calls: tuple[CallSpec, ...] = (),
        outbound: Outbound | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.identity = identity
        self.rng = rng
        self.seed = seed
        self.calls = calls
        self.outbound = outbound if outbound is not None else Outbound()
        self.ledger = ledger if ledger is not None else Ledger()
        #: ``service`` when every instance of the service in this process shares :attr:`ledger` (a host).
        self.ledger_scope = "instance" if ledger is None else "service"
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = Counters()
        self.chaos = Chaos()
        self.generation = 0
        #: Errors the current error fault may still inject; ``None`` without a limit.
        self.errors_left: int | None = None
        self._headers = (
            f"x-meshcheck-service: {identity.service}\r\n"
            f"x-meshcheck-version: {identity.version}\r\n"
            f"x-meshcheck-instance: {identity.instance}\r\n"
            "content-type: application/json\r\n"
        ).encode()
        ident = json.dumps(dataclasses.asdict(identity), separators=(",", ":"))
        self._body_prefix = ident[:-1] + ',"method":'

    def set_chaos(self, chaos: Chaos) -> None:
        """Replace the chaos state; every call is a new generation."""
        self.chaos = chaos
        self.errors_left = chaos.error.limit if chaos.error is not None else None
        self.generation += 1

    # Handler -----------------------------------------------------------------------------------------

    def on_connection(self) -> None:  # noqa: D102
        self.counters.connections += 1

    def on_abandoned(self) -> None:  # noqa: D102
        self.counters.abandoned += 1

    def on_protocol_error(self, status: int) -> None:  # noqa: D102
        self._count(status)

    def handle(self, conn: HttpConnection, req: Request) -> None:  # noqa: D102
        counters = self.counters
        counters.received += 1
        self.ledger.attempt(req.request_id)
        chaos = self.chaos
        rng = self.rng
        if chaos.reset is not None and roll(rng, chaos.reset.probability):
            counters.faults["reset"] += 1
            conn.reset()
            return
        delay = 0.0
        fault = b""
        if chaos.latency is not None and roll(rng, chaos.latency.probability):
            counters.faults["delay"] += 1
            delay = chaos.latency.delay_ms / 1000.0
            fault = b"delay"
        target = req.target
        path, qmark, query = target.partition(b"?")
        extra = b""
        error: str | None = None
        status = 200
        if chaos.error is not None and self.errors_left != 0 and roll(rng, chaos.error.probability):
            if self.errors_left is not None:
                self.errors_left -= 1
            counters.faults["error"] += 1
            status = chaos.error.status
            fault = fault + b",error" if fault else b"error"
        elif qmark and query:
            status, extra, error, more_delay = self._apply_overrides(query)
            delay += more_delay
        if fault:
            extra += b"x-meshcheck-fault: " + fault + b"\r\n"
        if status < 400:
            counters.executed += 1
            self.ledger.execute(req.request_id)
            if self.calls:
                task = asyncio.ensure_future(self._serve_with_calls(conn, req, path, fault, status, extra, delay))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
        body = self._body(req, path, fault, error)
        if delay > 0.0:
            conn.defer(delay, lambda: self._send(conn, status, extra, body))
        else:
            self._send(conn, status, extra, body)

    async def _serve_with_calls(
        self, conn: HttpConnection, req: Request, path: bytes, fault: bytes, status: int, extra: bytes, delay: float
    ) -> None:
        """Make the dependency calls in order, then answer (after the chaos delay, if any)."""
        results: list[tuple[CallSpec, CallResult]] = []
        failed_hop: str | None = None
        for spec in self.calls:
            result = await self.outbound.call(spec, req.request_id)
            results.append((spec, result))
            if result.ok or spec.on_error == "ignore":
                continue
            self.counters.calls_failed += 1
            if spec.on_error == "fail":
                # No answer at all (the sidecar unreachable) is a bad gateway, as a real client library reports.
                status = result.status if result.status is not None else 502
            else:
                status = int(spec.on_error)
            failed_hop = result.failed_hop or f"{self.identity.service} -> {spec.service}"
            extra += f"{FAILED_HOP_HEADER}: {failed_hop}\r\n".encode("latin-1")
            break
        if delay > 0.0:
            await asyncio.sleep(delay)
        if conn.closed:
            return
        body = self._body(req, path, fault, None, results, failed_hop)
        self._send(conn, status, extra, body)

    # internals ---------------------------------------------------------------------------------------

    def _apply_overrides(self, query: bytes) -> tuple[int, bytes, str | None, float]:
        """Status, extra header lines, error message and delay from the query overrides."""
        try:
            overrides = parse_overrides(query.decode("latin-1"))
        except ValueError as exc:
            return 400, b"", str(exc), 0.0
        used = overrides.used()
        if not used:
            return 200, b"", None, 0.0
        counters = self.counters
        counters.override_requests += 1
        for name in used:
            counters.overrides[name] += 1
        status = pick_code(overrides.codes, self.rng) if overrides.codes is not None else 200
        extra = b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in overrides.headers or ())
        return status, extra, None, overrides.delay_s or 0.0

    def _body(
        self,
        req: Request,
        path: bytes,
        fault: bytes,
        error: str | None,
        calls: list[tuple[CallSpec, CallResult]] | None = None,
        failed_hop: str | None = None,
    ) -> bytes:
        text = (
            self._body_prefix
            + encode_basestring_ascii(req.method.decode("latin-1"))
            + ',"path":'
            + encode_basestring_ascii(path.decode("utf-8", "replace"))
        )
        if req.attempt is not None:
            text += ',"x-envoy-attempt-count":' + encode_basestring_ascii(req.attempt.decode("latin-1"))
        if fault:
            text += ',"fault":"' + fault.decode() + '"'
        if error is not None:
            text += ',"error":' + encode_basestring_ascii(error)
        if calls is not None:
            text += ',"calls":' + json.dumps(
                [{"service": spec.service, "status": result.status} for spec, result in calls], separators=(",", ":")
            )
        if failed_hop is not None:
            text += ',"failed_hop":' + encode_basestring_ascii(failed_hop)
        return (text + "}").encode()

    def _send(self, conn: HttpConnection, status: int, extra: bytes, body: bytes) -> None:
        self._count(status)
        conn.respond(status, self._headers + extra, body)

    def _count(self, status: int) -> None:
        by_status = self.counters.by_status
        by_status[status] = by_status.get(status, 0) + 1

    # reports -----------------------------------------------------------------------------------------

    def chaos_doc(self) -> dict[str, Any]:
        """Body of ``GET /chaos``."""
        doc: dict[str, Any] = {"chaos": self.chaos.to_json(), "generation": self.generation}
        if self.errors_left is not None:
            doc["errors_left"] = self.errors_left
        return doc

    def stats_doc(self) -> dict[str, Any]:
        """Body of ``GET /stats``."""
        c = self.counters
        return {
            **dataclasses.asdict(self.identity),
            "pid": os.getpid(),
            "seed": self.seed,
            "requests_received": c.received,
            "responses_total": sum(c.by_status.values()),
            "responses_by_status": {str(k): v for k, v in sorted(c.by_status.items())},
            "faults_injected": dict(c.faults),
            "query_overrides": dict(c.overrides),
            "override_requests": c.override_requests,
            "abandoned": c.abandoned,
            "connections": c.connections,
            "executed": c.executed,
            "calls_made": self.outbound.calls,
            "calls_failed": c.calls_failed,
            "ledger": self.ledger.summary(),
            "chaos_generation": self.generation,
            "chaos": self.chaos.to_json(),
        }

    def metrics_text(self) -> str:
        """Body of ``GET /metrics`` in the Prometheus text exposition format 0.0.4."""
        return metrics_text([self])
