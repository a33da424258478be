"""Istio's bootstrap ``stats_config``, so a local Envoy's Prometheus names match a real sidecar's.

Source: ``istio/istio: tools/packaging/common/envoy_bootstrap.json``. From 1.24 istiod appends the
``;`` delimiter to every cluster's ``alt_stat_name`` and HTTP stat prefix, and the bootstrap switches
(``delimited_stats_tags_enabled``) to tag regexes that cut at that delimiter. The result, for both
forms, is ``envoy_cluster_upstream_rq_total{cluster_name="outbound|8084||order-service.…"}`` with
the full cluster name: labels without Envoy's ``envoy_`` prefix, and ``response_code_class="5xx"``
rather than ``"5"``.

Istio's ``stats_matcher`` inclusion list is deliberately not reproduced: a default sidecar hides
``cluster.outbound|…`` stats unless ``proxyStatsMatcher`` adds them, and meshcheck needs them (the kube
context's pods expose every ``cluster.outbound`` stat too, so ``expect_counter`` may name any of them).

What the local sidecars leave out are the tags no stat of theirs can carry (:data:`UNMATCHABLE_TAGS`).
Envoy runs every tag regex that does not start with ``^``, a literal name and a dot on every stat name
it creates, with ``std::regex``; with 100 services a sidecar creates about 11,000 names, and each such
regex costs it about 0.08 s of CPU at start-up (``bench/bench_scale.py`` measures it).
"""

from __future__ import annotations

from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.translate.common import JSON

STAT_PREFIX_DELIMITER = ";"

_DELIMITED_TAGS: list[tuple[str, str]] = [
    ("cluster_name", r"^cluster(\.(.+);)"),
    (
        "http_conn_manager_prefix",
        r"^http\.(((?:[_.[:digit:]\w]*|[_\[\]aAbBcCdDeEfF[:digit:]\w\:]*));\.)",
    ),
    ("thread_name", r"^server(\.(.+))\.watchdog"),
]

_LEGACY_TAGS: list[tuple[str, str]] = [
    ("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),
    ("http_conn_manager_prefix", r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
]

_COMMON_TAGS: list[tuple[str, str]] = [
    ("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("response_code", r"_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq(_(\dxx))$"),
    (
        "http_conn_manager_listener_prefix",
        r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    ("listener_address", r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("mongo_prefix", r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"),
    ("cache", r"(cache\.(.+?)\.)"),
    ("component", r"(component\.(.+?)\.)"),
    ("tag", r"(tag\.(.+?);\.)"),
    ("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
    ("authz_enforce_result", r"rbac(\.(allowed|denied))"),
    ("authz_dry_run_action", r"(\.istio_dry_run_(allow|deny)_)"),
    ("authz_dry_run_result", r"(\.shadow_(allowed|denied))"),
]


#: Istio's tags that cannot match any stat of a meshcheck Envoy: they match only the stats of Wasm
#: filters and of RBAC dry runs and shadow rules, which its HTTP filters (fault, router) never create,
#: and each needs an ``_`` that no cluster name or HTTP stat prefix of ours has at that place (service
#: and namespace names are DNS-1123 labels). Dropping them changes no metric name or label. Tags that a
#: service name could trigger (``cache``, ``component``, ``tag``, ``authz_enforce_result``: a service
#: ``cache`` gets a ``cache`` label in a real sidecar) stay, so such names keep matching Istio's.
UNMATCHABLE_TAGS = frozenset({"wasm_filter", "authz_dry_run_action", "authz_dry_run_result"})


def istio_stats_config(version: IstioVersion, *, complete: bool = False) -> JSON:
    """The bootstrap ``stats_config`` of an Istio ``version`` sidecar (tag extraction only).

    Pair it with clusters from :func:`~pytest_meshcheck.translate.build_clusters` and an HCM
    ``stat_prefix`` from :func:`delimited_stat_prefix`; the regexes expect the delimiter from 1.24.

    Args:
        version: Whose tag list to follow.
        complete: Keep every tag of Istio's list, even those in :data:`UNMATCHABLE_TAGS`, which only
            slow a meshcheck Envoy's start-up.
    """
    first = _DELIMITED_TAGS if version.stat_prefix_delimiter else _LEGACY_TAGS
    return {
        "use_all_default_tags": False,
        "stats_tags": [
            {"tag_name": name, "regex": regex}
            for name, regex in first + _COMMON_TAGS
            if complete or name not in UNMATCHABLE_TAGS
        ],
    }


def delimited_stat_prefix(prefix: str, version: IstioVersion) -> str:
    """``util.DelimitedStatsPrefix``: append ``;`` from Istio 1.24, so tag regexes know where it ends.

    Use it for the HCM ``stat_prefix`` too (istiod's outbound one is ``outbound_0.0.0.0_<port>``), so
    fault counters come out as ``envoy_http_fault_aborts_injected{http_conn_manager_prefix=…}``.
    """
    return prefix + STAT_PREFIX_DELIMITER if version.stat_prefix_delimiter else prefix
