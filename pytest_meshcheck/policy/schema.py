"""The field sets Istio's CRDs define, and what pytest-meshcheck does with each field.

Field names come from the ``networking.istio.io`` CRD OpenAPI schema of Istio 1.30.3 (the same for
``v1alpha3``, ``v1beta1`` and ``v1``). They are hard-coded so the package does not need the CRD file at run
time; ``tests/unit/test_policy_validation.py`` checks them against the shared copy of the CRD when it is
present.

Every field of an object falls in exactly one class:

* modelled: read by the builders in ``virtual_service.py`` / ``destination_rule.py``;
* :data:`IGNORED`: accepted with a :class:`~pytest_meshcheck.policy.model.PolicyWarning`, because it cannot
  change retry, timeout, fault, circuit-breaker, outlier or load-balancing behaviour in the local mesh;
* :data:`UNSUPPORTED`: known to Istio but not modelled, and able to change what the tests measure, so the
  load fails rather than silently testing something else;
* :data:`PASSTHROUGH`: Kubernetes bookkeeping, accepted silently;
* anything else is unknown to Istio and rejected, as the API server's structural schema would.
"""

from __future__ import annotations

from typing import Literal


def _f(names: str) -> frozenset[str]:
    return frozenset(names.split())


JsonType = Literal["string", "integer", "number", "boolean", "object", "array"]

# Objects are named after Istio's proto messages (``Delay`` is HTTPFaultInjection.Delay and so on).
CRD_FIELDS: dict[str, frozenset[str]] = {
    "VirtualService": _f("exportTo gateways hosts http tcp tls"),
    "HTTPRoute": _f(
        "corsPolicy delegate directResponse fault headers match mirror mirror_percent mirrorPercent "
        "mirrorPercentage mirrors name redirect retries rewrite route timeout"
    ),
    "HTTPMatchRequest": _f(
        "authority gateways headers ignoreUriCase method name port queryParams scheme sourceLabels "
        "sourceNamespace statPrefix uri withoutHeaders"
    ),
    "StringMatch": _f("exact prefix regex"),
    "HTTPRouteDestination": _f("destination headers weight"),
    "Destination": _f("host port subset"),
    "PortSelector": _f("number"),
    "HTTPRetry": _f("attempts backoff perTryTimeout retryIgnorePreviousHosts retryOn retryRemoteLocalities"),
    "HTTPFaultInjection": _f("abort delay"),
    "Delay": _f("exponentialDelay fixedDelay percent percentage"),
    "Abort": _f("grpcStatus http2Error httpStatus percentage"),
    "Percent": _f("value"),
    "DestinationRule": _f("exportTo host subsets trafficPolicy workloadSelector"),
    "Subset": _f("labels name trafficPolicy"),
    "TrafficPolicy": _f(
        "connectionPool loadBalancer outlierDetection portLevelSettings proxyProtocol retryBudget tls tunnel"
    ),
    "ConnectionPoolSettings": _f("http tcp"),
    "TCPSettings": _f("connectTimeout idleTimeout maxConnectionDuration maxConnections tcpKeepalive"),
    "TcpKeepalive": _f("interval probes time"),
    "HTTPSettings": _f(
        "h2UpgradePolicy http1MaxPendingRequests http2MaxRequests idleTimeout maxConcurrentStreams "
        "maxRequestsPerConnection maxRetries useClientProtocol"
    ),
    "OutlierDetection": _f(
        "baseEjectionTime consecutive5xxErrors consecutiveErrors consecutiveGatewayErrors "
        "consecutiveLocalOriginFailures interval maxEjectionPercent minHealthPercent "
        "splitExternalLocalOriginErrors"
    ),
    "LoadBalancerSettings": _f("consistentHash localityLbSetting simple warmup warmupDurationSecs"),
    "ConsistentHashLB": _f(
        "httpCookie httpHeaderName httpQueryParameterName maglev minimumRingSize ringHash useSourceIp"
    ),
    "HTTPCookie": _f("attributes name path ttl"),
    "RingHash": _f("minimumRingSize"),
    "MagLev": _f("tableSize"),
    "Warmup": _f("aggression duration minimumPercent"),
}

# Kubernetes objects around the spec (not part of Istio's CRD schema).
K8S_FIELDS: dict[str, frozenset[str]] = {
    "Document": _f("apiVersion kind metadata spec status"),
    "ObjectMeta": _f(
        "name generateName namespace selfLink uid resourceVersion generation creationTimestamp "
        "deletionTimestamp deletionGracePeriodSeconds labels annotations ownerReferences finalizers "
        "managedFields"
    ),
}

# Fields only in Istio's unreleased master CRD: newer than the releases pytest-meshcheck models.
MASTER_ONLY: dict[str, frozenset[str]] = {
    "HTTPSettings": _f("http2KeepAlive"),
    "LoadBalancerSettings": _f("backendUtilization zoneAwareLbSetting"),
    "OutlierDetection": _f("outlierDetectionHttpErrorCodes"),
}

_ROUTING = "changes which requests reach which destination"

UNSUPPORTED: dict[str, dict[str, str]] = {
    "VirtualService": {
        "tcp": "TCP routes are not modelled; pytest-meshcheck tests HTTP routes only",
        "tls": "TLS (SNI) routes are not modelled; pytest-meshcheck tests HTTP routes only",
    },
    "HTTPRoute": {
        "corsPolicy": "CORS handling can reject requests before they are routed",
        "delegate": "delegate VirtualServices are not modelled",
        "directResponse": "a direct response replaces the upstream call",
        "mirror": "mirrored traffic adds load to another destination",
        "mirror_percent": "mirrored traffic adds load to another destination",
        "mirrorPercent": "mirrored traffic adds load to another destination",
        "mirrorPercentage": "mirrored traffic adds load to another destination",
        "mirrors": "mirrored traffic adds load to other destinations",
        "redirect": "a redirect replaces the upstream call",
        "rewrite": "rewriting the URI or authority changes what the destination receives",
    },
    "HTTPMatchRequest": {
        "authority": f"matching on the authority {_ROUTING}",
        "gateways": f"matching on gateways {_ROUTING}",
        "port": f"matching on the port {_ROUTING}",
        "scheme": f"matching on the scheme {_ROUTING}",
        "sourceLabels": f"matching on the caller's labels {_ROUTING}",
        "sourceNamespace": f"matching on the caller's namespace {_ROUTING}",
    },
    "TrafficPolicy": {
        "portLevelSettings": "per-port policies replace the top-level policy block by block",
        "proxyProtocol": "PROXY protocol changes how connections to the destination are opened",
        "retryBudget": "a retry budget limits concurrent retries (Istio 1.27+)",
        "tunnel": "tunnelling changes how connections to the destination are opened",
    },
    "Warmup": {
        "aggression": "slow-start aggression changes load-balancing weights",
        "minimumPercent": "slow-start minimum weight changes load-balancing weights",
    },
}

IGNORED: dict[str, dict[str, tuple[JsonType, str]]] = {
    "VirtualService": {
        "exportTo": ("array", "ignored: the local mesh applies every policy to every caller"),
    },
    "HTTPRoute": {
        "headers": ("object", "ignored: request/response header manipulation is not applied in the local mesh"),
    },
    "HTTPMatchRequest": {
        "statPrefix": ("string", "ignored: it only renames Envoy route statistics"),
    },
    "HTTPRouteDestination": {
        "headers": ("object", "ignored: request/response header manipulation is not applied in the local mesh"),
    },
    "DestinationRule": {
        "exportTo": ("array", "ignored: the local mesh applies every policy to every caller"),
        "workloadSelector": (
            "object",
            "ignored: the local mesh applies this DestinationRule to every caller, not only the selected workloads",
        ),
    },
    "TrafficPolicy": {
        "tls": (
            "object",
            "ignored: the local mesh talks plain HTTP between sidecars; TLS settings do not change retries, "
            "timeouts, circuit breaking or outlier detection",
        ),
    },
    "LoadBalancerSettings": {
        "localityLbSetting": ("object", "ignored: the local mesh has a single locality, so it has no effect"),
    },
    "HTTPCookie": {
        "attributes": ("array", "ignored: cookie attributes do not change which host a request hashes to"),
    },
}

PASSTHROUGH: dict[str, frozenset[str]] = {
    "Document": _f("status"),
    "ObjectMeta": K8S_FIELDS["ObjectMeta"] - {"name", "namespace", "labels", "annotations"},
}


def known_fields(obj: str) -> frozenset[str]:
    """Every field Istio (or Kubernetes, for the envelope) defines on ``obj``."""
    return CRD_FIELDS.get(obj) or K8S_FIELDS.get(obj, frozenset())
