"""The platform's chaos HTTP API, served by ``meshcheck up`` (default port 8092).

It speaks the endpoints of the user's existing chaos service, so their runbooks and curl commands work
unchanged against the local mesh; faults land on the destination workloads, where the caller's
sidecar sees them as real failures:

- ``POST /api/chaos/error`` ``{"service", "errorRate", "errorType"}``: ``errorType`` is ``HTTP_<status>``
  (default ``HTTP_500``) or ``RESET`` for connection resets.
- ``POST /api/chaos/latency`` ``{"service", "delayMs", "probability"}`` (probability defaults to 1.0).
- ``DELETE /api/chaos/scenarios/{service}``: clear every fault on the service.
- ``GET /api/chaos/scenarios``: the faults in force, per instance.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from pytest_meshcheck.backend import MeshBackend, WorkloadInstance
from pytest_meshcheck.chaos.destination import DestinationChaos, error_spec, latency_spec, reset_spec
from pytest_meshcheck.chaos.kinds import FaultKind
from pytest_meshcheck.errors import ChaosError, TopologyError

_HTTP_TYPE = re.compile(r"^HTTP_(\d{3})$")


class _BadRequest(Exception):
    pass


def _number(body: dict[str, Any], key: str, default: float | None = None) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(f"field {key!r} must be a number, got {value!r}")
    return float(value)


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
        except ValueError as exc:
            raise _BadRequest("the request body must be JSON, with Content-Type: application/json") from exc
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        return body

    async def post_error(request: web.Request) -> web.Response:
        body = await body_of(request)
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
            raise _BadRequest(f"errorType {error_type!r} must be HTTP_<status> (such as HTTP_503) or RESET")
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
        targets = _service_targets(mesh, body)
        spec = latency_spec(_number(body, "delayMs"), _number(body, "probability", 1.0))
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
