"""Counter increases are counted series by series, so a cluster removed or re-added in a window never goes negative."""

from __future__ import annotations

from pytest_meshcheck.metrics.prom import Sample, series_increase


def s(cluster: str, value: float) -> Sample:
    return Sample({"__name__": "envoy_cluster_upstream_rq_retry", "cluster_name": cluster}, value)


def test_series_present_at_both_ends_count_their_difference() -> None:
    assert series_increase([s("a", 10), s("b", 5)], [s("a", 14), s("b", 5)]) == 4


def test_series_new_in_the_window_count_from_zero() -> None:
    assert series_increase([s("a", 10)], [s("a", 10), s("b", 7)]) == 7


def test_series_gone_by_the_end_add_nothing() -> None:
    # A difference of sums would say -3: the removed cluster's whole total.
    assert series_increase([s("a", 10), s("b", 3)], [s("a", 12)]) == 2


def test_a_reset_series_counts_from_zero() -> None:
    # The cluster was removed and added again: its counter restarted at 0 and reached 4.
    assert series_increase([s("a", 10)], [s("a", 4)]) == 4


def test_series_are_matched_by_every_label() -> None:
    other_pod = Sample({"__name__": "envoy_cluster_upstream_rq_retry", "cluster_name": "a", "pod": "p2"}, 6)
    assert series_increase([s("a", 10)], [s("a", 10), other_pod]) == 6
