"""The run's ``index.html`` (links to every scenario report, run summary, regressions) and ``index.json``.

``index.json`` holds the run information and each scenario's verdict and checks, without the bulky series:
it is what a later run passes as its baseline. Only the xdist controller (or a plain run) writes these
two files, after every worker has written its scenario files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.graph import merge_graphs, render_graph
from pytest_meshcheck.report.record import SCHEMA_VERSION, ScenarioRecord, check_outcome
from pytest_meshcheck.report.redact import redact_data
from pytest_meshcheck.report.render import FAILING, format_time, prepare_record, template_env, write_text
from pytest_meshcheck.report.summary import (
    CHECK_LABELS,
    VERDICT_LABELS,
    check_counts,
    format_duration,
    format_expected,
    format_interval,
    format_power,
    format_value,
    headline_check,
    istio_version_shown,
    load_phases,
    not_held_checks,
    scenario_duration,
    scenario_verdict,
    total_requests,
)

if TYPE_CHECKING:
    from pytest_meshcheck.report.baseline import Regression

INDEX_HTML = "index.html"
INDEX_JSON = "index.json"
RUN_KIND = "meshcheck-run"
# Fields left out of index.json: the series and tables live in each scenario's own JSON.
_BULKY = ("timeseries", "prom_series", "metric_deltas", "load", "chaos", "policies", "lint_findings", "graph", "error")
_ORDER = ("failed", "inconclusive", "error", "xpassed", "passed", "xfailed", "skipped")
# Run-information keys shown in their own rows. ``context`` is what older callers passed for the mesh
# context: it is read as ``mesh_context`` and never listed a second time.
_SHOWN = frozenset({"started_at", "ended_at", "mesh_context", "context", "istio_version", "seed"})


def _is_scenario(data: Any) -> bool:
    return isinstance(data, dict) and "nodeid" in data and "schema" in data and "outcome" in data


def load_records(report_dir: Path | str) -> list[ScenarioRecord]:
    """Read every scenario record (``<name>.json``) in ``report_dir``, ordered by start time and node id.

    Other JSON files (``index.json``, files that are not scenario records) are ignored.

    Raises:
        MeshcheckError: The directory is missing, or a scenario record cannot be read.
    """
    directory = Path(report_dir)
    if not directory.is_dir():
        raise MeshcheckError(f"report directory {directory} does not exist; run the scenarios first or fix the path")
    records = []
    for path in sorted(directory.glob("*.json")):
        if path.name == INDEX_JSON:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MeshcheckError(
                f"cannot read scenario record {path}: {exc}; delete it (it is rewritten by the next run)"
            ) from exc
        if not _is_scenario(data):
            continue
        try:
            records.append(ScenarioRecord.from_dict(data))
        except TypeError as exc:
            raise MeshcheckError(
                f"{path} is not a scenario record this version can read (schema {data.get('schema')!r}, "
                f"this version writes {SCHEMA_VERSION}): {exc}; delete it or re-run the scenarios"
            ) from exc
    return sorted(records, key=lambda r: (r.started_at, r.nodeid))


def _run_view(records: Sequence[ScenarioRecord], run_info: Mapping[str, Any]) -> dict[str, Any]:
    counts: Counter[str] = Counter(scenario_verdict(r) for r in records)
    started = run_info.get("started_at") or min((r.started_at for r in records if r.started_at), default=0.0)
    ended = run_info.get("ended_at") or max((r.ended_at for r in records if r.ended_at), default=0.0)
    failing = sum(counts[o] for o in FAILING)
    if not records:
        headline = "No scenario produced a record."
    elif failing:
        headline = f"{failing} of {len(records)} scenarios did not hold."
    else:
        headline = f"All {len(records)} scenarios held."

    def distinct(key: str) -> str:
        values = {str(r.context[key]) for r in records if r.context.get(key) not in (None, "")}
        return ", ".join(sorted(values)) or "-"

    # Each record's resolved version (a record may hold the placeholder "default"), unless the run says.
    istio = run_info.get("istio_version") or ", ".join(sorted({istio_version_shown(r.context) for r in records}))
    mesh_context = run_info.get("mesh_context") or run_info.get("context") or distinct("mesh_context")

    rows = [
        (
            "Verdicts",
            ", ".join(f"{counts[o]} {VERDICT_LABELS[o].lower()}" for o in _ORDER if counts[o]) or "-",
        ),
        ("Requests sent", str(sum(total_requests(r) for r in records))),
        ("Duration", format_duration(ended - started) if started and ended and ended > started else "-"),
        ("Started", format_time(started)),
        ("Mesh context", str(mesh_context)),
        ("Istio version", str(istio or "-")),
        ("Seed", str(run_info.get("seed") if run_info.get("seed") is not None else distinct("seed"))),
    ]
    rows += [
        (k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in run_info.items() if k not in _SHOWN
    ]
    return {"headline": headline, "failing": failing, "rows": rows, "counts": counts}


def _scenario_row(record: ScenarioRecord, report_dir: Path) -> dict[str, Any]:
    check = headline_check(record)
    verdict = scenario_verdict(record)
    href = record.report_path if record.report_path and (report_dir / record.report_path).is_file() else ""
    failing = verdict in FAILING
    not_held = []
    bad = {id(c) for c in not_held_checks(record)}
    for index, c in enumerate(record.checks):
        if id(c) not in bad:
            continue
        outcome = check_outcome(c)
        # The scenario page explains such a check in its failure section; without one, in the checks table.
        anchor = f"failed-{index}" if failing else f"check-{index}"
        not_held.append(
            {
                "name": c.name,
                "outcome": outcome,
                "label": CHECK_LABELS.get(outcome, outcome),
                "observed": format_value(c.observed, c.unit),
                "expected": format_expected(c),
                "detects": c.detects,
                "power": format_power(c),
                "href": f"{href}#{anchor}" if href else "",
            }
        )
    headline = check_outcome(check) if check else ""
    return {
        "nodeid": record.nodeid,
        "title": record.title,
        "outcome": record.outcome,
        "verdict": verdict,
        "label": VERDICT_LABELS.get(verdict, verdict.upper()),
        "href": href,
        "check": check.name if check else "",
        "check_outcome": headline,
        "check_label": CHECK_LABELS.get(headline, headline) if check else "",
        "expected": format_expected(check) if check else "-",
        "observed": format_value(check.observed, check.unit) if check else "-",
        "interval": format_interval(check) if check else "-",
        "counts": check_counts(record),
        "not_held": not_held,
        "requests": total_requests(record) if load_phases(record) else "-",
        "duration": format_duration(scenario_duration(record)) if scenario_duration(record) else "-",
        # The checks that did not hold say why; the message is for failures without such a check (errors).
        "message": (record.message.splitlines() or [""])[0] if failing and not not_held else "",
    }


def _index_json(
    records: Sequence[ScenarioRecord], regressions: Sequence[Regression], run_info: Mapping[str, Any]
) -> str:
    scenarios = []
    for record in records:
        data = asdict(record)
        for key in _BULKY:
            data.pop(key, None)
        data["requests"] = total_requests(record)
        data["verdict"] = scenario_verdict(record)
        scenarios.append(data)
    doc = {
        "kind": RUN_KIND,
        "schema": SCHEMA_VERSION,
        "run_info": dict(run_info),
        "scenarios": scenarios,
        "regressions": [asdict(r) for r in regressions],
    }
    return json.dumps(redact_data(doc), indent=1, sort_keys=True, default=str)


def write_index(
    report_dir: Path | str,
    records: Sequence[ScenarioRecord],
    regressions: Sequence[Regression] = (),
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``index.html`` and ``index.json`` for a run.

    Args:
        report_dir: Directory holding the scenario reports.
        records: The run's scenarios (usually :func:`load_records` of ``report_dir``), in display order.
        regressions: Regressions against a baseline (see :mod:`pytest_meshcheck.report.baseline`).
        run_info: Run-level facts shown in the summary. Known keys: ``started_at``, ``ended_at`` (unix
            seconds), ``mesh_context`` (``context`` is read as it), ``istio_version`` (default: each
            scenario's resolved version), ``seed``; any other key is shown as it is
            (``baseline``, ``pytest_args``...). Values are redacted.

    Returns:
        Path of ``index.html``.

    Raises:
        MeshcheckError: A file could not be written.
    """
    directory = Path(report_dir)
    info: Mapping[str, Any] = redact_data(dict(run_info or {}))
    # The index needs no series or tables: drop them before the (copying) redaction.
    run_graph = merge_graphs(r.graph for r in records if r.graph)
    light = [
        replace(r, timeseries={}, prom_series={}, metric_deltas={}, policies=[], chaos=[], load=load_phases(r))
        for r in records
    ]
    safe_records = [prepare_record(r) for r in light]
    write_text(directory / INDEX_JSON, _index_json(safe_records, regressions, info))
    html = (
        template_env()
        .get_template("index.html.j2")
        .render(
            run=_run_view(safe_records, info),
            scenarios=[_scenario_row(r, directory) for r in safe_records],
            regressions=[redact_data(str(r)) for r in regressions],
            generated=format_time(datetime.now(tz=UTC).timestamp()),
            graph_section=(
                render_graph(run_graph, "Service graph (every scenario of the run)") if run_graph["available"] else ""
            ),
        )
    )
    path = directory / INDEX_HTML
    write_text(path, html)
    return path
