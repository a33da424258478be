"""Charts over a scenario's time window, as inline SVG drawn by pygal.

Every chart shares the x axis (seconds since the scenario started) and shades the intervals in which a
fault was applied, so a dip in the success ratio can be read against the chaos that caused it. pygal
embeds a ``<script>`` (tooltips) and comments with URLs in its SVG; both are removed, so a report needs
no JavaScript and names no remote resource. Long series are reduced before drawing (see
:func:`rebin_timeseries` and :func:`decimate`) so that a five-hour run draws as fast as a one-minute run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import pygal
from pygal.style import Style

from pytest_meshcheck.report.record import ScenarioRecord

#: Points per chart series; more are rebinned (load series) or decimated (Prometheus series).
CHART_POINTS = 500

_DOTS_UP_TO = 60
_BAND_COLOR = "#e4572e"
_PALETTE = ("#1f6fb2", "#2a9d4b", "#8e44ad", "#c77c02", "#555555", "#17becf")
_SVG_NS = "http://www.w3.org/2000/svg"

#: Known Prometheus series: key -> (title, y-axis title). Other keys get a chart titled by their name.
PROM_CHARTS: dict[str, tuple[str, str]] = {
    "retries": ("Retries (cumulative since the scenario started)", "retries"),
    "ejections_active": ("Outlier ejections (hosts ejected at each moment)", "ejected hosts"),
    "overflow": ("Circuit-breaker overflow (cumulative)", "overflowed requests"),
    "upstream_requests": ("Upstream requests (cumulative, retries included)", "upstream requests"),
}
_PROM_ALIASES = {"ejections": "ejections_active"}


@dataclass(frozen=True)
class Chart:
    """One chart of a report.

    Attributes:
        key: Stable identifier (``success_ratio``, ``latency``, ``retries``...), used as ``data-chart``.
        title: Heading shown above the chart.
        svg: The SVG markup, or ``None`` when there was nothing to draw.
        points: Data points drawn, over all series (0 without data).
        note: Why there is no chart, or how the data was reduced; empty otherwise.
    """

    key: str
    title: str
    svg: str | None
    points: int
    note: str = ""


@dataclass(frozen=True)
class _Series:
    label: str
    points: list[tuple[float, float | None]]
    dashed: bool = False


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _agg_for(name: str) -> str:
    lowered = name.lower()
    if (lowered.startswith("p") and lowered[1:2].isdigit()) or lowered.endswith("_max") or lowered == "max_ms":
        return "max"
    return "mean"


def rebin_timeseries(series: dict[str, list[float]], max_points: int) -> tuple[dict[str, list[float | None]], float]:
    """Merge consecutive samples of a per-second load series into at most ``max_points`` bins.

    Each bin starts at its first ``t``. ``success_ratio`` is weighted by ``requests`` when present (so a
    bin's value is the true ratio over the bin); percentiles and maxima (``p50_ms``, ``p99_ms``, ``*_max``)
    take the bin's maximum (a conservative bound: merged percentiles cannot be recomputed); every other
    series, ``requests`` included, takes the mean, which keeps its per-second unit.

    Args:
        series: ``t`` and named value lists of the same length; ``None``/NaN values are gaps.
        max_points: Upper bound on the number of bins.

    Returns:
        The rebinned series (same keys) and the number of samples merged per bin (1 when unchanged).
    """
    t = series.get("t", [])
    n = len(t)
    if n <= max_points or max_points <= 0:
        return {k: [_finite(v) for v in vals] for k, vals in series.items()}, 1.0
    size = math.ceil(n / max_points)
    weights = series.get("requests")
    out: dict[str, list[float | None]] = {k: [] for k in series}
    for start in range(0, n, size):
        stop = min(start + size, n)
        for key, vals in series.items():
            window = vals[start:stop]
            if key == "t":
                out[key].append(_finite(window[0]))
                continue
            if key == "success_ratio" and weights is not None:
                pairs = [(v, _finite(w)) for v, w in zip(window, weights[start:stop], strict=False)]
                num = sum(fv * w for v, w in pairs if w and (fv := _finite(v)) is not None)
                den = sum(w for v, w in pairs if w and _finite(v) is not None)
                out[key].append(num / den if den else None)
                continue
            values = [fv for v in window if (fv := _finite(v)) is not None]
            if not values:
                out[key].append(None)
            elif _agg_for(key) == "max":
                out[key].append(max(values))
            else:
                out[key].append(sum(values) / len(values))
    return out, float(size)


def decimate(points: Sequence[Sequence[float]], max_points: int) -> list[list[float]]:
    """Keep at most ``max_points`` of ``[t, value]`` samples, keeping each bucket's lowest and highest.

    The kept samples are real samples in time order, so spikes and dips survive (a plain stride would
    drop a one-sample spike of ejections). Samples with a non-finite time or value are dropped.
    """
    clean = [[float(p[0]), float(p[1])] for p in points if len(p) >= 2 and _finite(p[0]) is not None]
    clean = [p for p in clean if math.isfinite(p[1])]
    if len(clean) <= max_points or max_points < 2:
        return clean
    buckets = max_points // 2
    size = math.ceil(len(clean) / buckets)
    out: list[list[float]] = []
    for start in range(0, len(clean), size):
        window = clean[start : start + size]
        lo = min(range(len(window)), key=lambda i: window[i][1])
        hi = max(range(len(window)), key=lambda i: window[i][1])
        out.extend(window[i] for i in sorted({lo, hi}))
    return out


def _strip_scripts(root: Any) -> Any:
    """Drop ``<script>`` elements and comments (they hold pygal.org URLs); a pygal xml filter."""
    script_tag = f"{{{_SVG_NS}}}script"
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == script_tag or child.tag == "script" or child.tag is ElementTree.Comment:
                parent.remove(child)
    return root


def _style(colors: Sequence[str]) -> Style:
    return Style(
        background="#ffffff",
        plot_background="#ffffff",
        foreground="#333333",
        foreground_strong="#111111",
        foreground_subtle="#888888",
        font_family="DejaVu Sans, Helvetica, Arial, sans-serif",
        colors=tuple(colors),
        opacity="0.22",
        opacity_hover="0.22",
        # Full-strength lines: the hover styles only matter with pygal's script, which is removed.
        stroke_opacity="1",
        stroke_opacity_hover="1",
        stroke_width="2",
        stroke_width_hover="2",
        transition="0s",
        title_font_size=14,
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=12,
    )


def _render(
    title: str,
    y_title: str,
    series: list[_Series],
    bands: list[tuple[float, float]],
    x_max: float,
    y_range: tuple[float, float],
    value_formatter: Callable[[float], str],
) -> str:
    colors = [_BAND_COLOR] if bands else []
    colors += list(_PALETTE[: len(series)])
    chart = pygal.XY(
        width=960,
        height=300,
        title=None,
        x_title="seconds since the scenario started",
        y_title=y_title,
        style=_style(colors),
        disable_xml_declaration=True,
        js=[],
        # Dots help read a short series; on long ones they would only add weight.
        show_dots=max((len(s.points) for s in series), default=0) <= _DOTS_UP_TO,
        dots_size=2.5,
        allow_interruptions=True,
        range=y_range,
        xrange=(0.0, max(x_max, 1e-9)),
        legend_at_bottom=True,
        legend_at_bottom_columns=min(len(colors), 4),
        truncate_legend=-1,
        value_formatter=value_formatter,
        x_value_formatter=lambda x: f"{x:g}",
        explicit_size=False,
        margin=12,
    )
    if bands:
        top = y_range[1]
        walk: list[tuple[float, float]] = []
        for start, end in bands:
            walk += [(start, y_range[0]), (start, top), (end, top), (end, y_range[0])]
        chart.add("chaos on", walk, fill=True, show_dots=False, stroke_style={"width": 0.01})
    for s in series:
        style: dict[str, Any] = {"width": 2.0}
        if s.dashed:
            style = {"width": 1.5, "dasharray": "6, 4"}
        chart.add(s.label, s.points, stroke_style=style, show_dots=not s.dashed and len(s.points) <= _DOTS_UP_TO)
    chart.add_xml_filter(_strip_scripts)
    svg: str = chart.render(is_unicode=True)
    # Inline SVG inside HTML needs no namespace declarations; dropping them keeps the page free of URLs.
    svg = svg.replace(f' xmlns="{_SVG_NS}"', "", 1).replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1)
    return svg


def _window(record: ScenarioRecord) -> tuple[float, float]:
    """Start and end (unix seconds) of the chart window: the scenario, widened to cover every sample."""
    times = [v for v in (_finite(x) for x in record.timeseries.get("t", [])) if v is not None]
    for points in record.prom_series.values():
        times += [v for p in points if p and (v := _finite(p[0])) is not None]
    starts = ([record.started_at] if record.started_at else []) + ([min(times)] if times else [])
    ends = ([record.ended_at] if record.ended_at else []) + ([max(times)] if times else [])
    if not starts:
        return 0.0, 0.0
    start = min(starts)
    return start, max([start, *ends])


def chaos_bands(record: ScenarioRecord, start: float, end: float) -> list[tuple[float, float]]:
    """Intervals (seconds since ``start``) in which each fault was live, clipped to the window."""
    bands = []
    for c in record.chaos:
        stop = c.reverted_at if c.reverted_at is not None else end
        lo, hi = max(c.applied_at, start), min(stop, end)
        if hi > lo:
            bands.append((lo - start, hi - start))
    return sorted(bands)


def _success_expected(record: ScenarioRecord) -> float | None:
    for check in record.checks:
        if check.unit == "ratio" and "success" in check.name.lower() and check.expected is not None:
            return float(check.expected)
    return None


def _y_range(values: list[float], floor: float = 0.0) -> tuple[float, float]:
    top = max([floor, *values]) if values else 1.0
    return 0.0, (top * 1.1 if top > 0 else 1.0)


def _ratio_range(values: list[float | None], expected: float | None) -> tuple[float, float]:
    """0..1, raised to a tenth below the lowest value so that a 0.99 vs 0.95 difference stays visible."""
    seen = [v for v in [*values, expected] if v is not None]
    low = min(seen) if seen else 0.0
    return max(0.0, math.floor((low - 0.05) * 10) / 10), 1.0


def _count_fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"


def _load_charts(record: ScenarioRecord, start: float, end: float) -> list[Chart]:
    ts, merged = rebin_timeseries(record.timeseries, CHART_POINTS)
    t = ts.get("t", [])
    xs = [None if v is None else v - start for v in t]
    bands = chaos_bands(record, start, end)
    note = f"Each point merges {merged:g} per-second samples." if merged > 1 else ""

    def series(key: str, label: str) -> _Series | None:
        values = ts.get(key)
        if not values or all(v is None for v in values):
            return None
        pts = [(x, v) for x, v in zip(xs, values, strict=False) if x is not None]
        return _Series(label, pts)

    def make(key: str, title: str, y_title: str, parts: list[_Series | None], **kw: Any) -> Chart:
        found = [p for p in parts if p is not None]
        data = [v for p in found for _, v in p.points if v is not None]
        if not data:
            return Chart(key, title, None, 0, "no data: the load generator recorded no per-second samples")
        drawn = sum(len(p.points) for p in found)
        y_range = kw.pop("y_range", None) or _y_range(data)
        extra = kw.pop("extra", [])
        svg = _render(title, y_title, [*found, *extra], bands, end - start, y_range, kw.pop("fmt"))
        return Chart(key, title, svg, drawn, note)

    expected = _success_expected(record)
    extra = []
    if expected is not None:
        extra = [_Series(f"expected {expected:.4g}", [(0.0, expected), (end - start, expected)], dashed=True)]
    ratio_series = series("success_ratio", "success ratio")
    pct = [k for k in ("p50_ms", "p90_ms", "p99_ms") if k in ts]
    return [
        make(
            "success_ratio",
            "Success ratio per second",
            "success ratio",
            [ratio_series],
            y_range=_ratio_range([v for _, v in ratio_series.points] if ratio_series else [], expected),
            extra=extra if ratio_series else [],
            fmt=lambda v: f"{v:.2f}",
        ),
        make(
            "latency",
            "Latency percentiles",
            "milliseconds",
            [series(k, k.replace("_ms", "")) for k in pct],
            fmt=lambda v: f"{v:.3g} ms",
        ),
        make(
            "requests",
            "Requests per second",
            "requests / s",
            [series("requests", "requests")],
            fmt=_count_fmt,
        ),
    ]


def _prom_chart(record: ScenarioRecord, key: str, start: float, end: float) -> Chart:
    title, y_title = PROM_CHARTS.get(key, (key.replace("_", " ").capitalize(), key))
    raw = record.prom_series.get(key)
    if raw is None:
        raw = next(
            (v for alias, k in _PROM_ALIASES.items() if k == key for v in [record.prom_series.get(alias)] if v),
            None,
        )
    points = decimate(raw or [], CHART_POINTS)
    if not points:
        why = "Prometheus returned no samples" if raw is not None else "this series was not collected"
        return Chart(key, title, None, 0, f"no data: {why}")
    pts: list[tuple[float, float | None]] = [(p[0] - start, p[1]) for p in points]
    values = [p[1] for p in points]
    svg = _render(
        title,
        y_title,
        [_Series(y_title, pts)],
        chaos_bands(record, start, end),
        end - start,
        _y_range(values, 1.0),
        _count_fmt,
    )
    notes = []
    if len(points) < len(raw or []):
        notes.append(f"{len(points)} of {len(raw or [])} samples drawn (lowest and highest kept).")
    if not any(values):
        notes.append(f"All {len(points)} samples are 0.")
    note = " ".join(notes)
    return Chart(key, title, svg, len(points), note)


def scenario_charts(record: ScenarioRecord) -> list[Chart]:
    """Build every chart of a scenario report, in display order.

    The load charts (success ratio with the expected value as a dashed line, latency percentiles,
    requests per second) come from ``record.timeseries``; retries, ejections and overflow (and any other
    series) from ``record.prom_series``. A chart without data is returned with ``svg=None`` and a note.
    """
    start, end = _window(record)
    charts = _load_charts(record, start, end)
    keys = list(PROM_CHARTS) + sorted(k for k in record.prom_series if k not in PROM_CHARTS and k not in _PROM_ALIASES)
    charts += [_prom_chart(record, key, start, end) for key in keys]
    return charts
