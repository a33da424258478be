"""The client sidecar's bootstrap, listeners and ingress routes for the local mesh.

Design (documented in ``docs/explanation/architecture.md``): one Envoy plays the *caller's sidecar*.
Its ``outbound`` listener is where the load generator sends requests (``Host`` selects the service),
and it enforces every VirtualService and DestinationRule, as the client-side sidecar does in Istio.
Workloads get no inbound Envoy: every resilience field we verify (retries, timeouts, faults,
connection pools, outlier detection) is enforced on the outbound side, and the destination-side
evidence an inbound sidecar would give (requests served per instance, faults applied) comes from the
echo workloads' own counters. Thirteen more Envoys would cost about 0.9 GB and start-up time for no
verdict they could change.

The optional ``gateway`` listener stands for the platform's ingress: path prefixes route to the
``outbound`` listener with the service's host name, so gateway traffic gets exactly the same policies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_meshcheck.topology import Topology
from pytest_meshcheck.translate.common import ROUTER_FILTER_NAME

OUTBOUND_LISTENER = "outbound"
GATEWAY_LISTENER = "gateway"
OUTBOUND_ROUTES = "meshcheck-outbound"
GATEWAY_ROUTES = "meshcheck-gateway"
GATEWAY_CLUSTER = "meshcheck-gateway-to-sidecar"

FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Fields a test or report reads from the access log; response flags and details are the evidence
# for UO/URX/UT/UH/FI/DI outcomes.
ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "start": "%START_TIME(%s.%6f)%",
    "listener": "%ACCESS_LOG_TYPE%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "duration_ms": "%DURATION%",
    "route_name": "%ROUTE_NAME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
}


#: The router's per-attempt log, written beside a listener's access log (see :func:`attempt_log_path`).
ATTEMPTS_LOG_NAME = "attempts.log"
#: Envoy's outlier-detection event log, one per sidecar (see :func:`bootstrap`).
OUTLIER_LOG_NAME = "outlier.log"

# One record per upstream attempt (the router's upstream log: Envoy writes it when the attempt ends,
# retried or not), joined across sidecars by ``x-request-id``, which Envoy keeps on every retry and the
# echo workloads forward on their calls. ``start`` has microseconds so a call made inside an attempt can
# be placed under the right one. %UPSTREAM_REQUEST_ATTEMPT_COUNT% is not set on an attempt's own record
# (Envoy 1.40 logs 0), so an attempt's number is its rank by start time within its request.
ATTEMPT_LOG_FORMAT = {
    "listener": "%ACCESS_LOG_TYPE%",
    "log_type": "%ACCESS_LOG_TYPE%",
    "start": "%START_TIME(%s.%6f)%",
    "duration_ms": "%DURATION%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def http_listener(
    name: str,
    port: int,
    route_config: str,
    rds_source: Mapping[str, Any],
    http_filters: Sequence[Mapping[str, Any]],
    access_log_path: Path,
    stat_prefix: str,
) -> dict[str, Any]:
    """An HTTP/1.1 listener whose routes come from RDS, logging every request and every attempt as JSON.

    The router of ``http_filters`` gets an upstream log (:func:`with_attempt_log`) writing to
    :func:`attempt_log_path` of ``access_log_path``.
    """
    filters = with_attempt_log(http_filters, attempt_log_path(access_log_path), name)
    return {
        "name": name,
        "address": _address(port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM_TYPE,
                            "stat_prefix": stat_prefix,
                            "rds": {"route_config_name": route_config, "config_source": dict(rds_source)},
                            "http_filters": filters,
                            # Istio sets no stream idle timeout on sidecars; Envoy's default of 5 min
                            # would end long delay scenarios early.
                            "stream_idle_timeout": "0s",
                            "access_log": [
                                {
                                    "name": "envoy.access_loggers.file",
                                    "typed_config": {
                                        "@type": FILE_LOG_TYPE,
                                        "path": str(access_log_path),
                                        "log_format": {"json_format": {**ACCESS_LOG_FORMAT, "listener": name}},
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def attempt_log_path(access_log_path: Path) -> Path:
    """Where the per-attempt log of a listener logging to ``access_log_path`` goes: the same directory."""
    return access_log_path.with_name(ATTEMPTS_LOG_NAME)


def with_attempt_log(http_filters: Sequence[Mapping[str, Any]], path: Path, listener: str) -> list[dict[str, Any]]:
    """``http_filters`` with the router's upstream log (one JSON line per attempt) added.

    This is observability, not translation: istiod's router has no upstream log (a mesh gets access logs
    from the Telemetry API or ``meshConfig``), so the translated filters stay as istiod makes them and
    only the local sidecars add it here. Envoy writes a record when an attempt ends, retried or final;
    ``--file-flush-interval-msec`` (``sidecar.LOG_FLUSH_INTERVAL``) bounds how long it stays buffered.

    Raises:
        ValueError: ``http_filters`` has no router entry to log from.
    """
    out = [dict(f) for f in http_filters]
    routers = [i for i, f in enumerate(out) if f.get("name") == ROUTER_FILTER_NAME]
    if not routers:
        raise ValueError(f"http_filters has no {ROUTER_FILTER_NAME} entry to attach the per-attempt log to")
    router = out[routers[-1]]
    router["typed_config"] = {
        **router.get("typed_config", {}),
        "upstream_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": FILE_LOG_TYPE,
                    "path": str(path),
                    "log_format": {"json_format": {**ATTEMPT_LOG_FORMAT, "listener": listener}},
                },
            }
        ],
    }
    return out


def bootstrap(
    *,
    node_id: str,
    cds_source: Mapping[str, Any],
    listeners: Sequence[Mapping[str, Any]],
    stats_config: Mapping[str, Any],
    outlier_event_log: Path | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap: admin on an OS-assigned loopback port, CDS from a file, 1 s stats flush.

    ``outlier_event_log``: where Envoy writes one JSON line (an ``OutlierDetectionEvent``) each time its
    outlier detector ejects or returns a host. This is observability, not translation: istiod sets no event
    log on its sidecars, so only the local sidecars add it. The line is stamped on the main thread as it
    ejects the host, before the workers' load balancers hear of it, so it tells which attempts Envoy sent
    before the ejection and which it sent while the ejection was still on its way to the worker. Envoy
    buffers it as it does access logs (``--file-flush-interval-msec``).
    """
    config: dict[str, Any] = {
        "node": {"id": node_id, "cluster": "meshcheck-client"},
        "admin": {"address": _address(0)},
        "dynamic_resources": {"cds_config": dict(cds_source)},
        "static_resources": {"listeners": [dict(x) for x in listeners]},
        "stats_config": dict(stats_config),
        # Histograms are merged on flush; 1 s keeps latency series fresh (Istio's 5 s would lag scenarios).
        "stats_flush_interval": "1s",
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {
                        # The local mesh has no real downstream limit to protect; this silences Envoy's warning.
                        "overload.global_downstream_max_connections": 50000,
                    },
                }
            ]
        },
    }
    if outlier_event_log is not None:
        config["cluster_manager"] = {"outlier_detection": {"event_log_path": str(outlier_event_log)}}
    return config


def gateway_route_config(topology: Topology) -> dict[str, Any]:
    """Ingress routes: each prefix goes to the sidecar listener with the service's host name."""
    routes: list[dict[str, Any]] = []
    for gw in topology.gateway_routes:
        svc = topology.service(gw.service)
        routes.append(
            {
                "name": f"gateway{gw.prefix.replace('/', '-')}",
                "match": {"prefix": gw.prefix},
                "route": {
                    "cluster": GATEWAY_CLUSTER,
                    "host_rewrite_literal": f"{svc.name}:{svc.port}",
                    # The sidecar hop owns every timeout and retry, as the policies say.
                    "timeout": "0s",
                },
            }
        )
    return {
        "name": GATEWAY_ROUTES,
        "virtual_hosts": [{"name": "gateway", "domains": ["*"], "routes": routes}],
    }


def gateway_cluster(sidecar_port: int) -> dict[str, Any]:
    """The cluster from the gateway listener to the sidecar listener (limits off, like Istio's defaults)."""
    limit = 4294967295
    return {
        "name": GATEWAY_CLUSTER,
        "alt_stat_name": f"{GATEWAY_CLUSTER};",
        "type": "STATIC",
        "connect_timeout": "10s",
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": limit,
                    "max_pending_requests": limit,
                    "max_requests": limit,
                    "max_retries": limit,
                }
            ]
        },
        "load_assignment": {
            "cluster_name": GATEWAY_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(sidecar_port)}}]}],
        },
    }
