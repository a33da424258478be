"""Compare a run with a previous run (the baseline) and list what got worse.

Two things count as a regression, scenario by scenario (matched by node id):

* the verdict flipped from good (passed, or an expected failure that failed) to bad (failed,
  inconclusive, error, or an expected failure that passed);
* a claimed or modelled rate moved the wrong way beyond statistical noise: the baseline's observed rate
  lies outside this run's interval, and this run's observed rate outside the baseline's interval, on the
  side the claim forbids. A move inside both intervals is noise at the stated confidence and is not
  reported.

Rate checks are the ratio checks whose role is ``claim`` or ``model`` (see
:func:`~pytest_meshcheck.report.record.check_role`), matched by name between the runs. The claim's
``alternative`` says which way is wrong: down for ``at-least`` (a success rate dropped), up for
``at-most`` (an error rate rose), away from the expected value for ``two-sided`` and ``exact``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.index import INDEX_JSON, load_records
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord, check_role
from pytest_meshcheck.report.summary import VERDICT_LABELS, format_interval, format_value, scenario_verdict

# ``success_ratio``: an at-least rate (a success rate) dropped; ``rate``: an at-most rate rose, or a
# two-sided rate moved away from its expected value.
RegressionKind = Literal["verdict", "success_ratio", "rate"]
GOOD = frozenset({"passed", "xfailed"})
BAD = frozenset({"failed", "inconclusive", "error", "xpassed"})


@dataclass(frozen=True)
class Regression:
    """One thing that got worse since the baseline run.

    Attributes:
        nodeid: The scenario.
        kind: ``verdict`` (the outcome flipped), ``success_ratio`` (an at-least rate dropped) or ``rate``
            (an at-most rate rose, or a two-sided one moved away from its expected value).
        check: The check's name for a rate; empty for ``verdict``.
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


def _rate_checks(record: ScenarioRecord) -> dict[str, CheckRecord]:
    return {
        c.name: c
        for c in record.checks
        if c.unit == "ratio" and c.observed is not None and check_role(c) in ("claim", "model")
    }


def _bounds(check: CheckRecord) -> tuple[float, float] | None:
    if check.interval is None or len(check.interval) != 2:
        return None
    return min(check.interval), max(check.interval)


def _dropped(before: CheckRecord, after: CheckRecord) -> bool:
    """``after`` is below ``before`` beyond noise: outside one of the two intervals."""
    if before.observed is None or after.observed is None or after.observed >= before.observed:
        return False
    now, then = _bounds(after), _bounds(before)
    return (now is not None and before.observed > now[1]) or (then is not None and after.observed < then[0])


def _rose(before: CheckRecord, after: CheckRecord) -> bool:
    """``after`` is above ``before`` beyond noise: outside one of the two intervals."""
    if before.observed is None or after.observed is None or after.observed <= before.observed:
        return False
    now, then = _bounds(after), _bounds(before)
    return (now is not None and before.observed < now[0]) or (then is not None and after.observed > then[1])


def _worse(before: CheckRecord, after: CheckRecord) -> tuple[RegressionKind, str] | None:
    """How the rate got worse between the runs (kind and verb), or ``None``; the claim says which way is bad."""
    if after.alternative == "at-least":
        return ("success_ratio", "dropped") if _dropped(before, after) else None
    if after.alternative == "at-most":
        return ("rate", "rose") if _rose(before, after) else None
    if after.expected is None or before.observed is None or after.observed is None:
        return None
    # Two-sided and exact: worse is farther from the expected value, beyond noise.
    if abs(after.observed - after.expected) <= abs(before.observed - after.expected):
        return None
    if _dropped(before, after):
        return ("rate", "dropped away from the expected value")
    if _rose(before, after):
        return ("rate", "rose away from the expected value")
    return None


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
        was, now = scenario_verdict(old), scenario_verdict(record)
        if was in GOOD and now in BAD:
            before = VERDICT_LABELS.get(was, was)
            after = VERDICT_LABELS.get(now, now)
            found.append(
                Regression(record.nodeid, "verdict", "", before, after, f"verdict flipped from {before} to {after}")
            )
        old_checks = _rate_checks(old)
        for name, check in _rate_checks(record).items():
            prior = old_checks.get(name)
            worse = _worse(prior, check) if prior is not None else None
            if prior is not None and worse is not None:
                kind, verb = worse
                before, after = _describe(prior), _describe(check)
                detail = f"{name} {verb} from {before} to {after}, beyond the intervals' noise"
                found.append(Regression(record.nodeid, kind, name, before, after, detail))
    return found


def compare_to_baseline(records: Sequence[ScenarioRecord], path: Path | str) -> list[Regression]:
    """:func:`load_baseline` then :func:`find_regressions`."""
    return find_regressions(records, load_baseline(path))
