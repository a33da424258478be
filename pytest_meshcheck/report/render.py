"""One scenario's report: ``<name>.json`` (the record) and ``<name>.html`` rendered from it.

The HTML is rendered on this side with Jinja2 (autoescape on) from the JSON text just written, so the
page shows exactly what the record holds and a record copied from CI renders the same. The page is one
self-contained file: CSS inline, charts as inline SVG, no script, no remote resource.
"""

from __future__ import annotations

import functools
import json
import math
import os
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.charts import decimate, rebin_timeseries, scenario_charts
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord, report_stem
from pytest_meshcheck.report.redact import redact_data
from pytest_meshcheck.report.summary import (
    VERDICT_LABELS,
    format_duration,
    format_interval,
    format_value,
    load_phases,
    scenario_duration,
    total_requests,
)

#: Points kept per series in the stored JSON; longer series are merged (load) or decimated (Prometheus).
STORED_POINTS = 4000
#: Rows shown in the metric-delta table; the JSON keeps all of them.
MAX_DELTA_ROWS = 400
#: Traceback lines kept (the last ones, where the error is).
MAX_TRACEBACK_LINES = 300

FAILING = frozenset({"failed", "error", "xpassed"})

# What Envoy's access-log response flags mean, for readers who do not know them by heart.
RESPONSE_FLAGS = {
    "-": "no flag: the upstream answered",
    "UH": "no healthy upstream host (all ejected or none ready)",
    "UF": "upstream connection failure",
    "UO": "upstream overflow: circuit breaker rejected the request",
    "NR": "no route configured",
    "URX": "retry limit exceeded or per-try timeouts used up",
    "NC": "upstream cluster not found",
    "DT": "request or connection exceeded max duration",
    "LH": "local service failed health check",
    "UT": "upstream request timeout",
    "LR": "connection local reset",
    "UR": "upstream remote reset",
    "UC": "upstream connection termination",
    "DI": "request delayed by fault injection",
    "FI": "request aborted by fault injection",
    "RL": "rate limited locally",
    "UAEX": "denied by the external authorization service",
    "RLSE": "rate limit service error",
    "IH": "rejected for invalid header values",
    "SI": "stream idle timeout",
    "DPE": "downstream protocol error",
    "UPE": "upstream protocol error",
    "UMSDR": "upstream max stream duration reached",
    "DC": "downstream connection termination",
    "OM": "overload manager terminated the request",
    "DF": "DNS resolution failed",
    "DO": "drop overload",
}


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader (the xdist controller) never sees half a file.

    The temporary file is opened normally (not with ``mkstemp``) so the report gets the usual
    permissions from the umask: reports are meant to be read by others.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a report file, turning OS errors into a message that names the file and the fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text)
    except OSError as exc:
        raise MeshcheckError(
            f"cannot write report file {path}: {exc.strerror or exc}; "
            "choose a writable report directory (--mesh-report-dir)"
        ) from exc


def prepare_record(record: ScenarioRecord) -> ScenarioRecord:
    """A copy of ``record`` as it is stored: secrets redacted, long series and tracebacks shortened.

    Shortening is noted in ``context``: ``timeseries_merged`` (samples merged per point) and
    ``prom_series_decimated`` (original sample counts), so a reader knows the data was reduced.
    """
    raw = asdict(record)
    raw["load"] = [asdict(phase) for phase in load_phases(record)]
    data: dict[str, Any] = redact_data(raw)
    context = data.setdefault("context", {})
    series, merged = rebin_timeseries(data.get("timeseries") or {}, STORED_POINTS)
    if merged > 1:
        data["timeseries"] = series
        context["timeseries_merged"] = merged
    decimated = {}
    for key, points in (data.get("prom_series") or {}).items():
        if len(points) > STORED_POINTS:
            data["prom_series"][key] = decimate(points, STORED_POINTS)
            decimated[key] = len(points)
    if decimated:
        context["prom_series_decimated"] = decimated
    error = data.get("error") or {}
    lines = str(error.get("traceback", "")).splitlines()
    if len(lines) > MAX_TRACEBACK_LINES:
        cut = len(lines) - MAX_TRACEBACK_LINES
        error["traceback"] = "\n".join([f"[... {cut} earlier lines cut ...]", *lines[cut:]])
    return ScenarioRecord.from_dict(data)


def write_scenario_report(record: ScenarioRecord, report_dir: Path | str) -> Path:
    """Write ``<name>.json`` and ``<name>.html`` for one scenario under ``report_dir``.

    Sets ``record.report_path`` to the HTML file name (relative to ``report_dir``). The stored record is
    redacted and shortened (see :func:`prepare_record`); ``record`` itself is otherwise left as it is.

    Returns:
        Path of the HTML report.

    Raises:
        MeshcheckError: A file could not be written.
    """
    directory = Path(report_dir)
    name = report_stem(record.nodeid)
    record.report_path = f"{name}.html"
    stored = prepare_record(record)
    text = stored.to_json()
    write_text(directory / f"{name}.json", text)
    html_path = directory / record.report_path
    write_text(html_path, render_scenario(ScenarioRecord.from_dict(json.loads(text))))
    return html_path


def rerender(json_path: Path) -> Path:
    """Render the HTML beside a scenario JSON again (after a template change, or for a CI artifact)."""
    record = ScenarioRecord.from_dict(json.loads(json_path.read_text(encoding="utf-8")))
    html_path = json_path.with_suffix(".html")
    write_text(html_path, render_scenario(record))
    return html_path


@functools.cache
def template_env() -> jinja2.Environment:
    """The Jinja2 environment of every report page: package templates, autoescape, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_meshcheck.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["value"] = format_value
    env.filters["duration"] = format_duration
    env.filters["utc"] = format_time
    env.globals["labels"] = VERDICT_LABELS
    return env


def format_time(ts: float | None) -> str:
    """A unix time as ``2024-05-01 12:00:03.250 UTC`` (or ``-``)."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _rel(ts: float | None, start: float) -> str:
    if ts is None:
        return "-"
    return f"{ts - start:+.1f} s" if start else format_time(ts)


def _headline(record: ScenarioRecord) -> str:
    failed = [c for c in record.checks if not c.passed]
    n = len(record.checks)
    if record.outcome == "passed":
        what = f"all {n} checks" if n > 1 else "the check" if n else "the scenario"
        return f"The policy held: {what} passed."
    if record.outcome == "failed":
        if failed:
            return f"The policy did not hold: {len(failed)} of {n} check{'s' if n != 1 else ''} failed."
        return "The scenario failed."
    if record.outcome == "error":
        kind = record.error.get("type", "")
        return f"The scenario broke before it could decide{': ' + kind if kind else ''}."
    if record.outcome == "xfailed":
        return "Expected failure: this claim is known not to hold" + (
            f" ({record.xfail_reason})." if record.xfail_reason else "."
        )
    if record.outcome == "xpassed":
        return "Unexpectedly passed: the scenario was marked as a claim that cannot hold" + (
            f" ({record.xfail_reason})." if record.xfail_reason else "."
        )
    return "The scenario was skipped."


def _check_views(checks: list[CheckRecord]) -> list[dict[str, Any]]:
    # Consecutive checks usually rest on the same policy lines; listing them once keeps the table readable.
    views: list[dict[str, Any]] = []
    previous: list[str] | None = None
    for check in checks:
        view = _check_view(check)
        view["same_reasons"] = bool(check.reasons) and check.reasons == previous
        if check.reasons:
            previous = check.reasons
        views.append(view)
    return views


def _check_view(check: CheckRecord) -> dict[str, Any]:
    return {
        "name": check.name,
        "passed": check.passed,
        "expected": format_value(check.expected, check.unit),
        "observed": format_value(check.observed, check.unit),
        "interval": format_interval(check),
        "n": "-" if check.n is None else str(check.n),
        "confidence": "-" if not check.confidence else f"{check.confidence * 100:g}%",
        "method": check.method or "-",
        "reasons": check.reasons,
        "detail": check.detail,
    }


def _policy_view(record: ScenarioRecord) -> list[dict[str, Any]]:
    out = []
    for p in record.policies:
        marked = set(p.highlight_lines)
        lines = [
            {"no": p.line + i, "text": text, "mark": (p.line + i) in marked}
            for i, text in enumerate(p.text.splitlines() or [""])
        ]
        where = f"{p.file}:{p.line}" if p.file else f"line {p.line}"
        out.append({"kind": p.kind, "name": p.name, "namespace": p.namespace, "where": where, "lines": lines})
    return out


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _proof_view(proof: dict[str, Any]) -> dict[str, Any]:
    """Proof as a table: one row per instance when values are mappings, else key/value rows."""
    if proof and all(isinstance(v, dict) for v in proof.values()):
        columns = sorted({k for v in proof.values() for k in v})
        rows = [[inst, *[_as_text(v.get(c, "")) for c in columns]] for inst, v in proof.items()]
        return {"columns": ["instance", *columns], "rows": rows}
    return {"columns": ["what", "value"], "rows": [[k, _as_text(v)] for k, v in proof.items()]}


def _chaos_view(record: ScenarioRecord, start: float) -> list[dict[str, Any]]:
    out = []
    for c in record.chaos:
        end = c.reverted_at if c.reverted_at is not None else record.ended_at or None
        out.append(
            {
                "kind": c.kind,
                "service": c.service,
                "instances": ", ".join(c.instances) or "-",
                "spec": _as_text(c.spec),
                "applied": format_time(c.applied_at),
                "applied_rel": _rel(c.applied_at, start),
                "reverted": format_time(c.reverted_at) if c.reverted_at is not None else "not reverted",
                "reverted_rel": _rel(c.reverted_at, start) if c.reverted_at is not None else "",
                "live_for": format_duration(end - c.applied_at) if end else "-",
                "proof": _proof_view(c.proof) if c.proof else None,
            }
        )
    return out


def _load_view(record: ScenarioRecord) -> list[dict[str, Any]]:
    out = []
    for i, phase in enumerate(load_phases(record), 1):
        out.append(
            {
                "index": i,
                "profile": ", ".join(f"{k}={_as_text(v)}" for k, v in phase.profile.items()) or "-",
                "window": f"{format_duration(max(0.0, phase.ended_at - phase.started_at))}",
                "requests": phase.requests,
                "status": ", ".join(f"{k}: {v}" for k, v in sorted(phase.status_counts.items())) or "-",
                "latency": ", ".join(f"{k} {v:.4g} ms" for k, v in phase.latency_ms.items()) or "-",
                "instances": ", ".join(f"{k}: {v}" for k, v in sorted(phase.instance_counts.items())) or "-",
                "attempts": ", ".join(f"{k}: {v}" for k, v in sorted(phase.attempt_counts.items())) or "-",
                "overloaded": phase.overloaded,
                "errors": ", ".join(f"{k}: {v}" for k, v in sorted(phase.errors.items())) or "-",
            }
        )
    return out


def _delta_view(deltas: dict[str, float]) -> dict[str, Any]:
    nonzero = {k: v for k, v in deltas.items() if isinstance(v, int | float) and v and math.isfinite(v)}
    ranked = sorted(nonzero.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:MAX_DELTA_ROWS]
    rows = [{"name": k, "delta": f"{v:+g}"} for k, v in sorted(ranked)]
    return {"rows": rows, "zero": len(deltas) - len(nonzero), "hidden": len(nonzero) - len(rows)}


def _flags_view(flags: dict[str, int]) -> list[dict[str, Any]]:
    total = sum(v for v in flags.values() if v > 0)
    rows = []
    for flag, count in sorted(flags.items(), key=lambda kv: (-kv[1], kv[0])):
        share = count / total if total else 0.0
        meaning = "; ".join(RESPONSE_FLAGS.get(part, "") for part in flag.split(",") if RESPONSE_FLAGS.get(part))
        rows.append(
            {
                "flag": flag,
                "count": count,
                "share": f"{share:.2%}",
                "width": f"{share * 100:.1f}",
                "meaning": meaning,
            }
        )
    return rows


def _context_view(record: ScenarioRecord) -> list[tuple[str, str]]:
    known = [
        ("mesh_context", "Mesh context"),
        ("istio_version", "Istio version"),
        ("envoy_version", "Envoy version"),
        ("seed", "Seed"),
        ("profile", "Load profile"),
        ("confidence", "Confidence level"),
    ]
    rows = [(label, _as_text(record.context.get(key, "-"))) for key, label in known]
    rows += [(k, _as_text(v)) for k, v in sorted(record.context.items()) if k not in dict(known)]
    return rows


def scenario_view(record: ScenarioRecord) -> dict[str, Any]:
    """Everything the scenario template shows, already formatted."""
    start = record.started_at
    charts = scenario_charts(record)
    return {
        "r": record,
        "label": VERDICT_LABELS.get(record.outcome, record.outcome.upper()),
        "failing": record.outcome in FAILING,
        "headline": _headline(record),
        "duration": format_duration(scenario_duration(record)) if scenario_duration(record) else "-",
        "requests": total_requests(record),
        "checks": _check_views(record.checks),
        "failed_checks": [{**_check_view(c), "same_reasons": False} for c in record.checks if not c.passed],
        "policies": _policy_view(record),
        "chaos": _chaos_view(record, start),
        "load": _load_view(record),
        "charts": [
            {
                "key": c.key,
                "title": c.title,
                "svg": Markup(c.svg) if c.svg else None,
                "points": c.points,
                "note": c.note,
            }
            for c in charts
        ],
        "deltas": _delta_view(record.metric_deltas),
        "flags": _flags_view(record.response_flags),
        "context": _context_view(record),
        "generated": format_time(datetime.now(tz=UTC).timestamp()),
        "json_href": str(Path(record.report_path).with_suffix(".json")) if record.report_path else "",
    }


def render_scenario(record: ScenarioRecord) -> str:
    """The HTML page of one scenario (a complete, self-contained document)."""
    return template_env().get_template("scenario.html.j2").render(**scenario_view(record))
