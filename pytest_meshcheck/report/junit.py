"""What a scenario puts in ``--junit-xml``: its verdict, each check's numbers, and the report path.

The plugin passes these pairs to ``record_property`` (or appends them to ``item.user_properties``, which
also reaches the xdist controller). Values are strings with full precision, for CI tools to parse.
"""

from __future__ import annotations

import re
from pathlib import Path

from pytest_meshcheck.report.record import ScenarioRecord, check_outcome, check_role
from pytest_meshcheck.report.summary import scenario_verdict

PREFIX = "meshcheck"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "check"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def junit_properties(record: ScenarioRecord, report_dir: Path | str | None = None) -> list[tuple[str, str]]:
    """``(name, value)`` pairs for ``record_property``.

    Names: ``meshcheck.verdict`` (pytest's outcome, ``inconclusive`` when the only checks that did not
    hold were inconclusive), then per check ``meshcheck.<check>.expected``, ``.observed``, ``.interval``
    (``low,high``), ``.n``, ``.confidence``, ``.passed``, ``.outcome`` (``passed``, ``failed``,
    ``inconclusive``, ``error``), ``.role``, ``.alternative``, and for rate verdicts ``.alpha``, ``.beta``,
    ``.delta``, ``.detects`` (checks that share a name get ``_2``, ``_3``...), and ``meshcheck.report``
    (the HTML path, under ``report_dir`` when given). Properties with no value (an exact check has no
    interval) are left out.
    """
    props: list[tuple[str, str]] = [(f"{PREFIX}.verdict", scenario_verdict(record))]
    seen: dict[str, int] = {}
    for check in record.checks:
        base = _slug(check.name)
        seen[base] = seen.get(base, 0) + 1
        key = f"{PREFIX}.{base}" + (f"_{seen[base]}" if seen[base] > 1 else "")
        interval = ",".join(_num(v) for v in check.interval) if check.interval else ""
        values = [
            ("expected", _num(check.expected)),
            ("observed", _num(check.observed)),
            ("interval", interval),
            ("n", "" if check.n is None else str(check.n)),
            ("confidence", _num(check.confidence)),
            ("passed", str(check.passed).lower()),
            ("outcome", check_outcome(check)),
            ("role", check_role(check)),
            ("alternative", check.alternative),
            ("alpha", _num(check.alpha)),
            ("beta", _num(check.beta)),
            ("delta", _num(check.delta)),
            ("detects", check.detects),
        ]
        props += [(f"{key}.{field}", value) for field, value in values if value]
    if record.report_path:
        path = Path(report_dir) / record.report_path if report_dir is not None else Path(record.report_path)
        props.append((f"{PREFIX}.report", path.as_posix()))
    return props
