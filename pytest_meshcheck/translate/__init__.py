"""Translate validated VirtualServices and DestinationRules into Envoy v3 config, as istiod does.

Pure functions returning JSON-serialisable dicts (``@type`` set where Envoy needs one):

* :func:`build_clusters`: one cluster per service and per DestinationRule subset, with Istio's defaults.
* :func:`build_route_config`: the client sidecar's outbound ``RouteConfiguration``.
* :func:`istio_stats_config` and :func:`delimited_stat_prefix`: Istio's metric naming.
* :func:`http_filters` (:func:`fault_filter`, :func:`router_filter`): the HCM filter entries, in order.

Version-dependent behaviour comes from :class:`~pytest_meshcheck.istio_version.IstioVersion`; the
facts are in ``shared/notes/istio-translation.md``.
"""

from __future__ import annotations

from pytest_meshcheck.translate.clusters import Endpoint, EndpointMap, build_clusters, service_clusters
from pytest_meshcheck.translate.common import cluster_name
from pytest_meshcheck.translate.faults import fault_filter, http_filters, router_filter, translate_fault
from pytest_meshcheck.translate.lookup import destination_rule_for, virtual_service_for
from pytest_meshcheck.translate.retries import convert_retry_policy, default_retry_policy, parse_retry_on
from pytest_meshcheck.translate.routes import DEFAULT_ROUTE_CONFIG_NAME, build_route_config, default_route
from pytest_meshcheck.translate.stats import delimited_stat_prefix, istio_stats_config

__all__ = [
    "DEFAULT_ROUTE_CONFIG_NAME",
    "Endpoint",
    "EndpointMap",
    "build_clusters",
    "build_route_config",
    "cluster_name",
    "convert_retry_policy",
    "default_retry_policy",
    "default_route",
    "delimited_stat_prefix",
    "destination_rule_for",
    "fault_filter",
    "http_filters",
    "istio_stats_config",
    "parse_retry_on",
    "router_filter",
    "service_clusters",
    "translate_fault",
    "virtual_service_for",
]
