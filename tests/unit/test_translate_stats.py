from __future__ import annotations

import pytest

from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.translate import delimited_stat_prefix, istio_stats_config

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
