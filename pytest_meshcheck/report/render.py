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
from pytest_meshcheck.report.lint_view import lint_section
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord, check_outcome, check_role, report_stem
from pytest_meshcheck.report.redact import redact_data
from pytest_meshcheck.report.summary import (
    CHECK_LABELS,
    NOT_HELD_VERDICTS,
    VERDICT_LABELS,
    format_duration,
    format_expected,
    format_interval,
    format_value,
    istio_version_shown,
    load_phases,
    not_held_checks,
    scenario_duration,
    scenario_verdict,
    total_requests,
)

#: Points kept per series in the stored JSON; longer series are merged (load) or decimated (Prometheus).
STORED_POINTS = 4000
#: Rows shown in the metric-delta table; the JSON keeps all of them.
MAX_DELTA_ROWS = 400
#: Traceback lines kept (the last ones, where the error is).
MAX_TRACEBACK_LINES = 300

#: Verdicts (see :func:`~pytest_meshcheck.report.summary.scenario_verdict`) that get a failure section.
FAILING = NOT_HELD_VERDICTS

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


def _headline(record: ScenarioRecord, verdict: str) -> str:
    bad = [check_outcome(c) for c in not_held_checks(record)]
    n = len(record.checks)
    checks = f"check{'s' if n != 1 else ''}"
    if verdict == "passed":
        what = f"all {n} checks" if n > 1 else "the check" if n else "the scenario"
        return f"The policy held: {what} passed."
    if verdict == "inconclusive":
        return (
            f"Not shown to hold: {len(bad)} of {n} {checks} inconclusive. The observed rate is below what a "
            "holding policy gives, but not clearly broken by the claim's delta; this is not a pass."
        )
    if verdict == "failed":
        if bad:
            failed = sum(1 for o in bad if o != "inconclusive")
            inconclusive = len(bad) - failed
            more = f", {inconclusive} inconclusive" if inconclusive else ""
            return f"The policy did not hold: {failed} of {n} {checks} failed{more}."
        return "The scenario failed."
    if verdict == "error":
        kind = record.error.get("type", "")
        return f"The scenario broke before it could decide{': ' + kind if kind else ''}."
    if verdict == "xfailed":
        return "Expected failure: this claim is known not to hold" + (
            f" ({record.xfail_reason})." if record.xfail_reason else "."
        )
    if verdict == "xpassed":
        return "Unexpectedly passed: the scenario was marked as a claim that cannot hold" + (
            f" ({record.xfail_reason})." if record.xfail_reason else "."
        )
    return "The scenario was skipped."


def _failure_title(verdict: str) -> str:
    return {
        "error": "What broke",
        "xpassed": "Why this counts as a failure",
        "inconclusive": "Why it did not pass",
    }.get(verdict, "Why it failed")


# What the three numbers of a rate verdict mean, shown as tooltips beside them.
_POWER_TITLES = {
    "alpha": "planned false-fail rate: the chance that a policy that holds fails this check",
    "beta": "planned miss rate: the chance that a policy off by delta passes this check",
    "delta": "the smallest violation of the claim this check is planned to catch",
}


def _power_view(check: CheckRecord) -> list[dict[str, str]]:
    values = (
        ("alpha", "\u03b1", check.alpha, ".2g"),
        ("beta", "\u03b2", check.beta, ".2g"),
        ("delta", "\u03b4", check.delta, ".4g"),
    )
    return [
        {"name": name, "symbol": symbol, "value": format(value, spec), "title": _POWER_TITLES[name]}
        for name, symbol, value, spec in values
        if value is not None
    ]


def _check_view(check: CheckRecord, index: int) -> dict[str, Any]:
    outcome = check_outcome(check)
    return {
        "index": index,
        "name": check.name,
        "role": check_role(check),
        "outcome": outcome,
        "passed": outcome == "passed",
        "label": CHECK_LABELS.get(outcome, outcome),
        "expected": format_expected(check),
        "observed": format_value(check.observed, check.unit),
        "interval": format_interval(check),
        "n": "-" if check.n is None else str(check.n),
        "confidence": "-" if not check.confidence else f"{check.confidence * 100:g}%",
        "method": check.method or "-",
        "reasons": check.reasons,
        "detail": check.detail,
        "detects": check.detects,
        "power": _power_view(check),
        # Where the reasons are: listed here (``reasons_id`` is their anchor), or a link to where they are.
        "reasons_id": "",
        "reasons_href": "",
        "reasons_note": "",
        # A check explained in the failure section only points there from the checks table.
        "explained_in_failure": False,
    }


def _check_views(
    record: ScenarioRecord, failing: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Views of the failure section's checks and of the checks table, each list of reasons said once.

    A failing page explains its failed, inconclusive and errored checks in the failure section: their
    policy lines are listed there, and the checks table links to them. Any list of reasons already shown
    (consecutive checks usually rest on the same policy lines) is linked to instead of repeated.

    Returns:
        The failure section's views, the checks table's views, and for every reason line listed on the
        page the anchor of its first listing (the message box links there instead of repeating it).
    """
    bad = {i for i, c in enumerate(record.checks) if check_outcome(c) != "passed"} if failing else set()
    failure = [_check_view(record.checks[i], i) for i in sorted(bad)]
    table = [_check_view(c, i) for i, c in enumerate(record.checks)]
    listed: dict[tuple[str, ...], tuple[str, str]] = {}
    homes: dict[str, str] = {}

    def place(view: dict[str, Any]) -> None:
        reasons = tuple(view["reasons"])
        if not reasons:
            return
        if reasons in listed:
            anchor, name = listed[reasons]
            view["reasons_href"] = f"#{anchor}"
            view["reasons_note"] = f"same policy lines and defaults as \u201c{name}\u201d"
            return
        anchor = f"reasons-{view['index']}"
        view["reasons_id"] = anchor
        listed[reasons] = (anchor, view["name"])
        for line in reasons:
            homes.setdefault(line.strip(), anchor)

    for view in failure:
        place(view)
    for view in table:
        if view["index"] in bad:
            view["explained_in_failure"] = True
        else:
            place(view)
    return failure, table, homes


def _message_view(
    message: str, homes: dict[str, str], failure_anchors: set[str], failure_title: str
) -> list[dict[str, str]]:
    """The message box's lines, with the reason lines listed elsewhere on the page replaced by one link.

    A failure message repeats the policy lines of its checks; the page lists them once (see
    :func:`_check_views`), so the message points there instead of saying them a second time.
    """
    lines: list[dict[str, str]] = []
    linked = False
    for line in message.splitlines():
        anchor = homes.get(line.strip())
        if anchor is None:
            lines.append({"indent": "", "text": line, "href": ""})
            continue
        if not linked:
            where = f"under \u201c{failure_title}\u201d" if anchor in failure_anchors else "in the checks table"
            indent = line[: len(line) - len(line.lstrip())]
            lines.append({"indent": indent, "text": f"(listed {where} below)", "href": f"#{anchor}"})
            linked = True
    return lines


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
    # The Istio version as resolved: a record of a scenario that broke early may hold "default".
    context = {**record.context, "istio_version": istio_version_shown(record.context)}
    known = [
        ("mesh_context", "Mesh context"),
        ("istio_version", "Istio version"),
        ("envoy_version", "Envoy version"),
        ("seed", "Seed"),
        ("profile", "Load profile"),
        ("confidence", "Confidence level"),
    ]
    rows = [(label, _as_text(context.get(key, "-"))) for key, label in known]
    rows += [(k, _as_text(v)) for k, v in sorted(context.items()) if k not in dict(known)]
    return rows


def scenario_view(record: ScenarioRecord) -> dict[str, Any]:
    """Everything the scenario template shows, already formatted."""
    start = record.started_at
    charts = scenario_charts(record)
    verdict = scenario_verdict(record)
    failing = verdict in FAILING
    failed_checks, checks, homes = _check_views(record, failing)
    failure_anchors = {v["reasons_id"] for v in failed_checks if v["reasons_id"]}
    return {
        "r": record,
        "verdict": verdict,
        "label": VERDICT_LABELS.get(verdict, verdict.upper()),
        "failing": failing,
        "headline": _headline(record, verdict),
        "failure_title": _failure_title(verdict),
        "message": _message_view(record.message, homes, failure_anchors, _failure_title(verdict)),
        "any_inconclusive": any(v["outcome"] == "inconclusive" for v in failed_checks),
        "istio_version": istio_version_shown(record.context),
        "duration": format_duration(scenario_duration(record)) if scenario_duration(record) else "-",
        "requests": total_requests(record),
        "checks": checks,
        "failed_checks": failed_checks,
        "policies": _policy_view(record),
        "lint": lint_section(record.lint_findings),
        "graph_section": _graph_section(record),
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


def _graph_section(record: ScenarioRecord) -> str:
    # Imported here: the graph module renders with this module's template environment.
    from pytest_meshcheck.report.graph import render_graph

    return render_graph(record.graph) if record.graph else ""


def render_scenario(record: ScenarioRecord) -> str:
    """The HTML page of one scenario (a complete, self-contained document)."""
    return template_env().get_template("scenario.html.j2").render(**scenario_view(record))
