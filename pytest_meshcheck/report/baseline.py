"""Compare a run with a previous run (the baseline) and list what got worse.

Two things count as a regression, scenario by scenario (matched by node id):

* the verdict flipped from good (passed, or an expected failure that failed) to bad (failed, error, or an
  expected failure that passed);
* a success ratio dropped beyond statistical noise: the baseline's observed ratio lies above this run's
  interval, or this run's observed ratio lies below the baseline's interval. A drop inside both intervals
  is noise at the stated confidence and is not reported.

Success-ratio checks are the ratio checks whose name contains ``success`` (``success rate``, ``success
ratio``), matched by name between the runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.index import INDEX_JSON, load_records
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord
from pytest_meshcheck.report.summary import VERDICT_LABELS, format_interval, format_value

RegressionKind = Literal["verdict", "success_ratio"]
GOOD = frozenset({"passed", "xfailed"})
BAD = frozenset({"failed", "error", "xpassed"})


@dataclass(frozen=True)
class Regression:
    """One thing that got worse since the baseline run.

    Attributes:
        nodeid: The scenario.
        kind: ``verdict`` (the outcome flipped) or ``success_ratio`` (a success ratio dropped).
        check: The check's name for ``success_ratio``; empty for ``verdict``.
        before: The baseline's value (outcome, or observed ratio with its interval).
        after: This run's value.
        detail: One sentence saying what changed, for the summary and the index.
    """

    nodeid: str
    kind: RegressionKind
    check: str
    before: str
    after: str
    detail: str

    def __str__(self) -> str:
        return f"{self.nodeid}: {self.detail}"


def _scenarios_from_run(data: dict[str, Any], path: Path) -> list[ScenarioRecord]:
    try:
        return [ScenarioRecord.from_dict(s) for s in data.get("scenarios", [])]
    except TypeError as exc:
        raise MeshcheckError(
            f"baseline {path}: a scenario entry cannot be read ({exc}); use an index.json written by pytest-meshcheck"
        ) from exc


def load_baseline(path: Path | str) -> list[ScenarioRecord]:
    """Read a previous run: its ``index.json``, its report directory, or one scenario's JSON.

    Raises:
        MeshcheckError: The path does not exist or holds no readable run.
    """
    p = Path(path)
    if p.is_dir():
        if (p / INDEX_JSON).is_file():
            p = p / INDEX_JSON
        else:
            records = load_records(p)
            if not records:
                raise MeshcheckError(
                    f"baseline directory {p} holds no {INDEX_JSON} and no scenario record; "
                    "pass the report directory (or its index.json) of a previous run"
                )
            return records
    if not p.is_file():
        raise MeshcheckError(
            f"baseline {p} does not exist; pass the report directory or index.json of a previous run "
            "(for example the reports/ artifact of the last nightly run)"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MeshcheckError(
            f"baseline {p} is not readable JSON ({exc}); pass the index.json of a previous run"
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("scenarios"), list):
        return _scenarios_from_run(data, p)
    if isinstance(data, dict) and "nodeid" in data:
        return [ScenarioRecord.from_dict(data)]
    raise MeshcheckError(
        f"baseline {p} is neither a run's index.json nor a scenario record; pass the index.json of a previous run"
    )


def _success_checks(record: ScenarioRecord) -> dict[str, CheckRecord]:
    return {
        c.name: c for c in record.checks if c.unit == "ratio" and "success" in c.name.lower() and c.observed is not None
    }


def _ratio_dropped(before: CheckRecord, after: CheckRecord) -> bool:
    if before.observed is None or after.observed is None or after.observed >= before.observed:
        return False
    above_now = after.interval is not None and len(after.interval) == 2 and before.observed > max(after.interval)
    below_then = before.interval is not None and len(before.interval) == 2 and after.observed < min(before.interval)
    return above_now or below_then


def _describe(check: CheckRecord) -> str:
    text = format_value(check.observed, check.unit)
    return f"{text} {format_interval(check)}" if check.interval else text


def find_regressions(records: Sequence[ScenarioRecord], baseline: Sequence[ScenarioRecord]) -> list[Regression]:
    """Regressions of ``records`` against ``baseline``, in the order of ``records``.

    Scenarios only in one of the two runs are not compared (renamed or new scenarios have no baseline).
    """
    previous = {r.nodeid: r for r in baseline}
    found: list[Regression] = []
    for record in records:
        old = previous.get(record.nodeid)
        if old is None:
            continue
        if old.outcome in GOOD and record.outcome in BAD:
            before = VERDICT_LABELS.get(old.outcome, old.outcome)
            after = VERDICT_LABELS.get(record.outcome, record.outcome)
            found.append(
                Regression(record.nodeid, "verdict", "", before, after, f"verdict flipped from {before} to {after}")
            )
        old_checks = _success_checks(old)
        for name, check in _success_checks(record).items():
            prior = old_checks.get(name)
            if prior is not None and _ratio_dropped(prior, check):
                before, after = _describe(prior), _describe(check)
                detail = f"{name} dropped from {before} to {after}, beyond the intervals' noise"
                found.append(Regression(record.nodeid, "success_ratio", name, before, after, detail))
    return found


def compare_to_baseline(records: Sequence[ScenarioRecord], path: Path | str) -> list[Regression]:
    """:func:`load_baseline` then :func:`find_regressions`."""
    return find_regressions(records, load_baseline(path))
