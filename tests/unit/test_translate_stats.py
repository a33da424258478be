from __future__ import annotations

import re

import pytest

from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.translate import delimited_stat_prefix, istio_stats_config
from pytest_meshcheck.translate.stats import UNMATCHABLE_TAGS

V = IstioVersion.parse


def tags(version: str) -> dict[str, str]:
    cfg = istio_stats_config(V(version))
    assert cfg["use_all_default_tags"] is False
    assert "stats_matcher" not in cfg  # meshcheck needs cluster.* stats a default sidecar hides
    return {t["tag_name"]: t["regex"] for t in cfg["stats_tags"]}


@pytest.mark.parametrize(
    ("version", "cluster_regex", "has_thread"),
    [
        ("1.23", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)", False),
        ("1.24", r"^cluster(\.(.+);)", True),
        ("1.31", r"^cluster(\.(.+);)", True),
    ],
)
def test_cluster_name_tag_follows_the_delimiter(version: str, cluster_regex: str, has_thread: bool) -> None:
    t = tags(version)
    assert t["cluster_name"] == cluster_regex
    assert ("thread_name" in t) is has_thread
    assert t["response_code"] == r"_rq(_(\d{3}))$"
    assert t["response_code_class"] == r"_rq(_(\dxx))$"
    assert next(iter(t)) == "cluster_name"  # first, so it claims the cluster name before any other tag


def test_http_prefix_tag_expects_delimiter_from_1_24() -> None:
    assert tags("1.24")["http_conn_manager_prefix"].endswith(r");\.)")
    assert tags("1.23")["http_conn_manager_prefix"].endswith(r")\.)")


@pytest.mark.parametrize(("version", "want"), [("1.23", "outbound_0.0.0.0_8084"), ("1.24", "outbound_0.0.0.0_8084;")])
def test_delimited_stat_prefix(version: str, want: str) -> None:
    assert delimited_stat_prefix("outbound_0.0.0.0_8084", V(version)) == want


@pytest.mark.parametrize("version", ["1.23", "1.24", "1.31"])
def test_local_config_drops_only_the_unmatchable_tags_and_keeps_istio_order(version: str) -> None:
    complete = istio_stats_config(V(version), complete=True)["stats_tags"]
    local = istio_stats_config(V(version))["stats_tags"]
    assert {t["tag_name"] for t in complete} - {t["tag_name"] for t in local} == UNMATCHABLE_TAGS
    assert local == [t for t in complete if t["tag_name"] not in UNMATCHABLE_TAGS]


@pytest.mark.parametrize(
    ("name", "its_stat"),
    [
        ("wasm_filter", "wasm_filter.stats_filter.component.proxy.istio_requests_total"),
        ("authz_dry_run_action", "http.inbound_0.0.0.0_80;.rbac.istio_dry_run_allow_shadow_allowed"),
        ("authz_dry_run_result", "http.inbound_0.0.0.0_80;.rbac.shadow_denied"),
    ],
)
def test_unmatchable_tags_match_only_stats_of_filters_meshcheck_never_runs(name: str, its_stat: str) -> None:
    assert set(UNMATCHABLE_TAGS) == {"wasm_filter", "authz_dry_run_action", "authz_dry_run_result"}
    regex = {t["tag_name"]: t["regex"] for t in istio_stats_config(V("1.31"), complete=True)["stats_tags"]}[name]
    assert re.search(regex, its_stat)
    # What a meshcheck Envoy names: clusters and HTTP prefixes from DNS labels, '|', digits and ';',
    # here with the service and namespace names closest to the regexes.
    ours = [
        "cluster.outbound|8080|v1|wasm-filter.istio-dry-run.svc.cluster.local;.upstream_rq_retry",
        "cluster.outbound|8080||shadow.allowed.svc.cluster.local;.retry_or_shadow_abandoned",
        "cluster.outbound|8080||shadow-denied.ns.svc.cluster.local;.upstream_rq_2xx",
        "http.outbound_0.0.0.0_0;.rds.meshcheck-outbound.version_text",
        "http.gateway_0.0.0.0_8090;.fault.aborts_injected",
    ]
    assert [n for n in ours if re.search(regex, n)] == []
