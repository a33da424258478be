"""The platform chaos API's request checking, against a fake mesh and a recording chaos controller.

No process starts: the aiohttp application runs in-process on a loopback test server, and the chaos
controller only records what it was asked to do, so each test sees exactly which faults a request
changed (none, for every refused request).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pytest_meshcheck.backend import WorkloadInstance
from pytest_meshcheck.chaos.destination import AppliedFault, ChaosTarget, DestinationChaos
from pytest_meshcheck.chaos.kinds import FaultKind
from pytest_meshcheck.chaos.platform_api import ERROR_FIELDS, LATENCY_FIELDS, build_app
from pytest_meshcheck.errors import TopologyError


class FakeMesh:
    """Two instances of order-service; any other name is unknown, as in a real topology."""

    def instances(self, service: str | None = None, *, version: str | None = None) -> list[WorkloadInstance]:
        if service not in ("order-service", "order-service.platform-core.svc.cluster.local"):
            raise TopologyError(f"unknown service {service!r} in topology <fake>")
        return [
            WorkloadInstance(
                service="order-service",
                namespace="platform-core",
                version="v1",
                name=f"order-service-v1-{i}",
                address="127.0.0.1",
                port=1,
                admin_url="http://127.0.0.1:1",
                pid=1,
            )
            for i in range(2)
        ]


class RecordingChaos:
    """Records apply/clear calls instead of calling workloads."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def apply(self, kind: FaultKind, spec: dict[str, Any], targets: Sequence[ChaosTarget]) -> AppliedFault:
        self.calls.append(("apply", (kind, spec)))
        return AppliedFault(kind, targets[0].service, tuple(t.name for t in targets), dict(spec), 0.0)

    def clear(self, targets: Sequence[ChaosTarget], kind: FaultKind | None = None) -> None:
        self.calls.append(("clear", kind))

    def active(self) -> dict[str, dict[str, Any]]:
        return {}


def request(method: str, path: str, body: bytes | None, *, content_type: str | None = "application/json") -> Any:
    """Send one request to a fresh app; return (status, JSON body, the chaos calls it made)."""
    chaos = RecordingChaos()

    async def go() -> tuple[int, Any]:
        app = build_app(FakeMesh(), cast(DestinationChaos, chaos))  # type: ignore[arg-type]
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            headers = {"Content-Type": content_type} if content_type else {}
            resp = await client.request(method, path, data=body, headers=headers)
            return resp.status, await resp.json()

    status, payload = asyncio.run(go())
    return status, payload, chaos.calls


def test_body_nested_100000_deep_is_a_400_not_a_500() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (deep, b'{"service": ' + deep + b', "errorRate": 1}'):
        status, payload, calls = request("POST", "/api/chaos/error", body)
        assert status == 400, payload
        assert "nested too deeply" in payload["error"]
        assert calls == []


def test_nested_value_just_inside_the_parser_limit_is_a_short_400() -> None:
    # Parses, but its repr in an error message would recurse too deeply or be megabytes long.
    nested = "[" * 400 + "]" * 400
    status, payload, calls = request(
        "POST", "/api/chaos/error", f'{{"service": "order-service", "errorRate": {nested}}}'.encode()
    )
    assert status == 400
    assert payload["error"] == "field 'errorRate' must be a number, got a JSON array"
    assert calls == []


@pytest.mark.parametrize(
    ("path", "body", "unknown", "accepted"),
    [
        ("/api/chaos/error", {"service": "order-service", "errorRate": 0.5, "status": 503}, "'status'", ERROR_FIELDS),
        ("/api/chaos/error", {"service": "order-service", "errorrate": 0.5}, "'errorrate'", ERROR_FIELDS),
        ("/api/chaos/latency", {"service": "order-service", "delayMs": 5, "delay": 5}, "'delay'", LATENCY_FIELDS),
    ],
)
def test_unknown_fields_are_refused_with_the_accepted_ones(
    path: str, body: dict[str, Any], unknown: str, accepted: tuple[str, ...]
) -> None:
    status, payload, calls = request("POST", path, json.dumps(body).encode())
    assert status == 400
    assert unknown in payload["error"]
    assert f"accepted fields: {', '.join(accepted)}" in payload["error"]
    assert calls == []


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/chaos/error", b'{"service": "order-service", "errorRate": NaN}', "must be a finite number"),
        ("/api/chaos/error", b'{"service": "order-service", "errorRate": 1' + b"0" * 400 + b"}", "finite number"),
        ("/api/chaos/latency", b'{"service": "order-service", "delayMs": Infinity}', "must be a finite number"),
        ("/api/chaos/latency", b'{"service": "order-service", "delayMs": 3600001}', "above the maximum 3600000"),
        ("/api/chaos/latency", b'{"service": "order-service", "delayMs": 5, "probability": -0.1}', "outside 0.0-1.0"),
        ("/api/chaos/error", b'{"service": "order-service", "errorRate": 1, "errorType": "HTTP_700"}', "200-599"),
        ("/api/chaos/error", b'{"service": "order-service", "errorRate": 1, "errorType": ["RESET"]}', "a JSON array"),
        ("/api/chaos/error", b'{"service": "nope", "errorRate": 1}', "unknown service 'nope'"),
    ],
)
def test_values_out_of_range_are_refused(path: str, body: bytes, message: str) -> None:
    status, payload, calls = request("POST", path, body)
    assert status in (400, 404)
    assert message in payload["error"], payload
    assert calls == []


def test_platform_readme_requests_work_without_a_content_type() -> None:
    # The platform README's curl commands use -d without -H "Content-Type: application/json".
    status, payload, calls = request(
        "POST", "/api/chaos/error", b'{"service": "order-service", "errorRate": 0.3}', content_type=None
    )
    assert status == 200, payload
    assert payload == {
        "applied": "error",
        "service": "order-service",
        "instances": ["order-service-v1-0", "order-service-v1-1"],
        "spec": {"status": 500, "probability": 0.3},
    }
    assert calls == [("clear", "reset"), ("apply", ("error", {"status": 500, "probability": 0.3}))]
    status, payload, calls = request(
        "POST",
        "/api/chaos/latency",
        b'{"service": "order-service", "delayMs": 20000, "probability": 1.0}',
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 200, payload
    assert payload["spec"] == {"delay_ms": 20000.0, "probability": 1.0}
    status, payload, calls = request("DELETE", "/api/chaos/scenarios/order-service", None, content_type=None)
    assert (status, payload) == (
        200,
        {"cleared": "order-service", "instances": ["order-service-v1-0", "order-service-v1-1"]},
    )
    assert calls == [("clear", None)]
