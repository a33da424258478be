"""Small pieces of Envoy v3 JSON shared by the translators: type URLs, durations, names.

Every builder in this package returns plain JSON-serialisable dicts in Envoy's proto-JSON form
(snake_case field names, durations as ``"1.5s"`` strings, wrapper types as bare values).
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

UINT32_MAX = 4294967295
"""``math.MaxUint32``: Istio's value for every circuit-breaker threshold it does not override."""

ISTIO_CONNECT_TIMEOUT = 10.0
"""``MeshConfig.connectTimeout`` default (``pkg/config/mesh/mesh.go``); Envoy's own default is 5 s."""

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
PREVIOUS_HOSTS_PREDICATE = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
PREVIOUS_PRIORITIES_CONFIG = "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"

FAULT_FILTER_NAME = "envoy.filters.http.fault"
ROUTER_FILTER_NAME = "envoy.filters.http.router"


def type_url(message: str) -> str:
    """Return the ``@type`` value of an ``Any`` holding ``message`` (a fully qualified proto name)."""
    return f"type.googleapis.com/{message}"


def duration(seconds: float) -> str:
    """Format seconds as a protobuf JSON ``Duration`` (``"10s"``, ``"0.250s"`` -> ``"0.25s"``).

    Nanosecond rounding keeps values parsed from ``250ms`` exact instead of leaking float noise.
    """
    whole, nanos = divmod(round(seconds * 1_000_000_000), 1_000_000_000)
    if nanos == 0:
        return f"{whole}s"
    return f"{whole}.{nanos:09d}".rstrip("0") + "s"


def cluster_name(port: int, subset: str | None, fqdn: str) -> str:
    """Istio's ``model.BuildSubsetKey`` for outbound traffic: ``outbound|<port>|<subset>|<fqdn>``."""
    return f"outbound|{port}|{subset or ''}|{fqdn}"


def parse_cluster_name(name: str) -> tuple[int, str, str] | None:
    """Split an ``outbound|port|subset|fqdn`` name into (port, subset, fqdn); ``None`` if not one."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound" or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2], parts[3]


def million_percent(percent: float) -> JSON:
    """``translatePercentToFractionalPercent``: a 0-100 double as parts per million.

    Istio converts with Go's ``uint32(p * 10000)``, which truncates; ``int()`` truncates the same
    IEEE-754 product the same way, so 0.57 % becomes 5699, exactly as istiod writes it.
    """
    return {"numerator": int(percent * 10000), "denominator": "MILLION"}


def hundred_percent(percent: int) -> JSON:
    """``translateIntegerToFractionalPercent``: the deprecated integer percent, out of 100."""
    return {"numerator": percent, "denominator": "HUNDRED"}
