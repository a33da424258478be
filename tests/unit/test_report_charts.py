"""Charts: reduction of long series, chaos bands, no-data handling, and SVG free of script."""

from __future__ import annotations

import math
import re

from test_report_samples import T0, passing_record

from pytest_meshcheck.report.charts import (
    CHART_POINTS,
    chaos_bands,
    decimate,
    rebin_timeseries,
    scenario_charts,
)
from pytest_meshcheck.report.record import ChaosRecord, ScenarioRecord


def test_rebin_keeps_the_exact_success_ratio_of_each_bin() -> None:
    # 10 seconds, 2 bins of 5: the bin's ratio must be total ok / total requests, not a mean of ratios.
    requests = [10.0, 100.0, 10.0, 100.0, 10.0, 50.0, 50.0, 50.0, 50.0, 50.0]
    ok = [0.0, 100.0, 0.0, 100.0, 0.0, 25.0, 50.0, 50.0, 50.0, 50.0]
    series = {
        "t": [T0 + i for i in range(10)],
        "success_ratio": [o / r for o, r in zip(ok, requests, strict=True)],
        "p99_ms": [float(i) for i in range(10)],
        "requests": requests,
    }
    out, merged = rebin_timeseries(series, 2)
    assert merged == 5
    assert out["t"] == [T0, T0 + 5]
    assert out["success_ratio"][0] == sum(ok[:5]) / sum(requests[:5])  # 200/230, a plain mean would say 0.4
    assert out["success_ratio"][1] == sum(ok[5:]) / sum(requests[5:])
    assert out["p99_ms"] == [4.0, 9.0]  # percentiles take the bin's worst second
    assert out["requests"] == [sum(requests[:5]) / 5, sum(requests[5:]) / 5]  # still per second


def test_rebin_leaves_short_series_and_turns_nan_into_gaps() -> None:
    series = {"t": [T0, T0 + 1, T0 + 2], "success_ratio": [1.0, math.nan, 0.5]}
    out, merged = rebin_timeseries(series, 500)
    assert merged == 1
    assert out["success_ratio"] == [1.0, None, 0.5]


def test_decimate_keeps_spikes_and_dips_in_time_order() -> None:
    points = [[T0 + i, 1.0] for i in range(10_000)]
    points[4321][1] = 50.0  # one-sample spike
    points[8765][1] = -3.0  # one-sample dip
    out = decimate(points, 200)
    assert len(out) <= 200
    assert [T0 + 4321, 50.0] in out
    assert [T0 + 8765, -3.0] in out
    assert [p[0] for p in out] == sorted(p[0] for p in out)
    assert all(p in points for p in out)  # real samples only


def test_decimate_drops_non_finite_samples() -> None:
    assert decimate([[T0, 1.0], [T0 + 1, math.nan], [T0 + 2, math.inf], [T0 + 3, 2.0]], 100) == [
        [T0, 1.0],
        [T0 + 3, 2.0],
    ]


def test_chaos_bands_are_clipped_and_an_unreverted_fault_lasts_to_the_end() -> None:
    rec = ScenarioRecord(nodeid="t::x", title="x", started_at=T0, ended_at=T0 + 100)
    rec.chaos = [
        ChaosRecord("error", "a", ["a-0"], {}, applied_at=T0 - 10, reverted_at=T0 + 5),
        ChaosRecord("latency", "a", ["a-0"], {}, applied_at=T0 + 50, reverted_at=None),
        ChaosRecord("reset", "a", ["a-0"], {}, applied_at=T0 + 200, reverted_at=T0 + 300),  # outside the window
    ]
    assert chaos_bands(rec, T0, T0 + 100) == [(0.0, 5.0), (50.0, 100.0)]


def _line_points(svg: str) -> list[int]:
    """Vertices of every drawn data line (pygal draws a series as one ``<path class="line ...">``)."""
    paths = re.findall(r'<path d="M([^"]+)" class="line reactive nofill"', svg)
    return [len(re.findall(r"-?\d+\.\d+ -?\d+\.\d+", d)) for d in paths]


def test_charts_draw_every_point_and_contain_no_script() -> None:
    rec = passing_record()
    charts = {c.key: c for c in scenario_charts(rec)}
    seconds = len(rec.timeseries["t"])
    ratio = charts["success_ratio"]
    assert ratio.svg is not None
    assert "<script" not in ratio.svg
    assert "http" not in ratio.svg
    # success ratio line plus the dashed expected line (2 points)
    assert sorted(_line_points(ratio.svg)) == [2, seconds]
    assert "expected 0.875" in ratio.svg
    assert "chaos on" in ratio.svg
    latency = charts["latency"]
    assert latency.svg is not None
    assert _line_points(latency.svg) == [seconds, seconds]
    retries = charts["retries"]
    assert retries.svg is not None
    assert _line_points(retries.svg) == [len(rec.prom_series["retries"])]


def test_charts_without_data_say_so() -> None:
    rec = ScenarioRecord(nodeid="t::x", title="x", started_at=T0, ended_at=T0 + 10)
    rec.prom_series = {"retries": []}
    charts = {c.key: c for c in scenario_charts(rec)}
    assert all(c.svg is None and c.points == 0 for c in charts.values())
    assert charts["success_ratio"].note.startswith("no data")
    assert charts["retries"].note == "no data: Prometheus returned no samples"
    assert charts["overflow"].note == "no data: this series was not collected"


def test_long_series_are_reduced_before_drawing() -> None:
    rec = passing_record()
    n = 12_000
    rec.timeseries = {
        "t": [T0 + i for i in range(n)],
        "success_ratio": [1.0] * n,
        "p50_ms": [1.0] * n,
        "p99_ms": [2.0] * n,
        "requests": [10.0] * n,
    }
    rec.prom_series = {"retries": [[T0 + i, float(i % 7)] for i in range(n)]}
    rec.ended_at = T0 + n
    charts = {c.key: c for c in scenario_charts(rec)}
    assert charts["success_ratio"].points <= CHART_POINTS
    assert "merges 24 per-second samples" in charts["success_ratio"].note
    assert charts["retries"].points <= CHART_POINTS
    assert f"of {n} samples drawn" in charts["retries"].note


def test_extra_prometheus_series_get_their_own_chart() -> None:
    rec = passing_record()
    rec.prom_series["upstream_rq_timeout"] = [[T0 + 1, 0.0], [T0 + 2, 3.0]]
    keys = [c.key for c in scenario_charts(rec)]
    assert keys[-1] == "upstream_rq_timeout"
