"""The platform's chaos HTTP API, served by ``meshcheck up`` (default port 8092).

It speaks the endpoints of the user's existing chaos service, so their runbooks and curl commands work
unchanged against the local mesh; faults land on the destination workloads, where the caller's
sidecar sees them as real failures. Every endpoint, body field, response and error is documented in
``docs/reference/chaos-api.md``; in short:

- ``POST /api/chaos/error`` ``{"service", "errorRate", "errorType"}``
- ``POST /api/chaos/latency`` ``{"service", "delayMs", "probability"}``
- ``DELETE /api/chaos/scenarios/{service}``
- ``GET /api/chaos/scenarios``

A request is checked whole before anything changes: a body that is not a JSON object, an unknown field
(a misspelt one would otherwise be silently ignored), a missing or out-of-range value all get a 400 with
a message, and the faults in force stay as they were.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

from aiohttp import web

from pytest_meshcheck.backend import MeshBackend, WorkloadInstance
from pytest_meshcheck.chaos.destination import DestinationChaos, error_spec, latency_spec, reset_spec
from pytest_meshcheck.chaos.kinds import FaultKind
from pytest_meshcheck.errors import ChaosError, TopologyError

_HTTP_TYPE = re.compile(r"^HTTP_(\d{3})$")

#: The body fields each POST endpoint accepts, in the order the error messages list them.
ERROR_FIELDS = ("service", "errorRate", "errorType")
LATENCY_FIELDS = ("service", "delayMs", "probability")

#: The longest delay the echo workloads sleep (``MAX_DELAY_S`` of their chaos model), in milliseconds.
MAX_DELAY_MS = 3_600_000.0


class _BadRequest(Exception):
    pass


def _shown(value: Any) -> str:
    """A short description of a client's value for an error message.

    Containers are named by type only: their repr could be huge, or recurse past the interpreter's limit
    on a deeply nested body, and turn a 400 into a 500.
    """
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


def _check_fields(body: dict[str, Any], accepted: tuple[str, ...]) -> None:
    unknown = [key for key in body if key not in accepted]
    if unknown:
        names = ", ".join(repr(k if len(k) <= 40 else k[:37] + "...") for k in unknown)
        raise _BadRequest(f"unknown field(s) {names}; accepted fields: {', '.join(accepted)}")


def _number(body: dict[str, Any], key: str, default: float | None = None) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(f"field {key!r} must be a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond a double's range
        number = math.inf
    # JSON parsing in Python accepts NaN and Infinity, and a huge literal overflows to infinity:
    # none of them is a rate or a delay.
    if not math.isfinite(number):
        raise _BadRequest(f"field {key!r} must be a finite number, got {_shown(value)}")
    return number


def _service_targets(mesh: MeshBackend, body: dict[str, Any]) -> list[WorkloadInstance]:
    service = body.get("service")
    if not isinstance(service, str) or not service:
        raise _BadRequest('field \'service\' is required, e.g. {"service": "order-service"}')
    try:
        return mesh.instances(service)
    except TopologyError as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc


def build_app(mesh: MeshBackend, chaos: DestinationChaos) -> web.Application:
    """The aiohttp application bound to a running mesh (any context: faults go through ``chaos``)."""

    async def body_of(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except RecursionError as exc:
            # A body nested deeper than the parser's recursion limit (such as 100,000 "[") is malformed
            # input, not a server fault.
            raise _BadRequest("the request body is nested too deeply to be a chaos request") from exc
        except ValueError as exc:
            raise _BadRequest("the request body must be JSON, with Content-Type: application/json") from exc
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        return body

    async def post_error(request: web.Request) -> web.Response:
        body = await body_of(request)
        _check_fields(body, ERROR_FIELDS)
        targets = _service_targets(mesh, body)
        rate = _number(body, "errorRate")
        error_type = body.get("errorType", "HTTP_500")
        kind: FaultKind
        other: FaultKind
        if error_type == "RESET":
            kind, other, spec = "reset", "error", reset_spec(rate)
        elif isinstance(error_type, str) and (m := _HTTP_TYPE.match(error_type)):
            kind, other, spec = "error", "reset", error_spec(rate, int(m.group(1)))
        else:
            raise _BadRequest(f"errorType {_shown(error_type)} must be HTTP_<status> (such as HTTP_503) or RESET")
        # Only now, with the whole request valid, change anything: a bad request leaves the faults as they were.
        await asyncio.to_thread(chaos.clear, targets, other)
        fault = await asyncio.to_thread(chaos.apply, kind, spec, targets)
        return web.json_response(
            {
                "applied": fault.kind,
                "service": fault.service,
                "instances": list(fault.instances),
                "spec": fault.spec,
            }
        )

    async def post_latency(request: web.Request) -> web.Response:
        body = await body_of(request)
        _check_fields(body, LATENCY_FIELDS)
        targets = _service_targets(mesh, body)
        delay_ms = _number(body, "delayMs")
        if delay_ms > MAX_DELAY_MS:
            raise _BadRequest(f"delayMs {delay_ms:g} is above the maximum {MAX_DELAY_MS:.0f} (one hour)")
        spec = latency_spec(delay_ms, _number(body, "probability", 1.0))
        fault = await asyncio.to_thread(chaos.apply, "latency", spec, targets)
        return web.json_response(
            {
                "applied": "latency",
                "service": fault.service,
                "instances": list(fault.instances),
                "spec": fault.spec,
            }
        )

    async def delete_scenarios(request: web.Request) -> web.Response:
        targets = _service_targets(mesh, {"service": request.match_info["service"]})
        await asyncio.to_thread(chaos.clear, targets)
        return web.json_response({"cleared": request.match_info["service"], "instances": [t.name for t in targets]})

    async def get_scenarios(_request: web.Request) -> web.Response:
        return web.json_response(chaos.active())

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except (_BadRequest, ChaosError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except web.HTTPNotFound as exc:
            return web.json_response({"error": exc.text}, status=404)

    app = web.Application(middlewares=[errors])
    app.router.add_post("/api/chaos/error", post_error)
    app.router.add_post("/api/chaos/latency", post_latency)
    app.router.add_delete("/api/chaos/scenarios/{service}", delete_scenarios)
    app.router.add_get("/api/chaos/scenarios", get_scenarios)
    return app
