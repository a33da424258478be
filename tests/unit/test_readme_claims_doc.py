"""docs/readme-claims.md stays in step with the scenarios and with the platform README it quotes.

* every node id the table names is collected by ``pytest --collect-only -q scenarios`` (run as a subprocess,
  so renaming or deleting a scenario fails here, not silently in the doc);
* every scenario of ``scenarios/test_readme_claims.py`` appears in the table;
* every row either names a scenario or says why it is "not verified yet";
* every quote is on the README lines its row cites (the user's README, vendored verbatim in
  ``tests/data/platform-readme/``; ``MESHCHECK_PLATFORM_README`` points to another copy).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "readme-claims.md"
README = Path(
    os.environ.get(
        "MESHCHECK_PLATFORM_README", ROOT / "tests" / "data" / "platform-readme" / "istio-resilience-readme.md"
    )
)
NODE_ID = re.compile(r"`(scenarios/[^`]+::[^`]+)`")
QUOTE = re.compile(r"“(.+?)”")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
LINES = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Row:
    """One row of the claims table."""

    first: int
    last: int
    quotes: tuple[str, ...]
    node_ids: tuple[str, ...]
    verdict: str
    text: str


def cells(line: str) -> list[str]:
    """The cells of a Markdown table line, with escaped pipes restored."""
    return [c.strip().replace("\\|", "|") for c in CELL_SPLIT.split(line.strip())[1:-1]]


def claim_rows() -> list[Row]:
    """The rows of the table under ``## Claims``."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Claims", 1)[1].split("\n## ", 1)[0]
    rows: list[Row] = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith(("|---", "| README line")):
            continue
        cols = cells(line)
        assert len(cols) == 5, f"expected 5 cells, got {len(cols)}: {line}"
        where, claim, checked, verdict, _ = cols
        ranges = [LINES.match(part.strip()) for part in where.split(",")]
        assert all(ranges), f"README line cell must be N or N-M (comma-separated): {where!r}"
        numbers = [int(n) for m in ranges if m for n in m.groups() if n]
        rows.append(
            Row(
                min(numbers),
                max(numbers),
                tuple(QUOTE.findall(claim)),
                tuple(NODE_ID.findall(checked)),
                verdict,
                line,
            )
        )
    return rows


@cache
def collected() -> frozenset[str]:
    """Node ids pytest collects under ``scenarios/``."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "scenarios"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"collecting scenarios failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return frozenset(line.strip() for line in proc.stdout.splitlines() if "::" in line)


def test_table_has_rows_and_each_is_checked_or_says_why_not() -> None:
    rows = claim_rows()
    assert len(rows) >= 30
    for row in rows:
        assert row.quotes, f"row without a quote: {row.text}"
        assert row.node_ids or row.verdict.startswith("not verified yet:"), (
            f"row names no scenario and does not say why it is not verified yet: {row.text}"
        )


def test_every_named_node_id_exists() -> None:
    known = collected()
    missing = sorted({n for row in claim_rows() for n in row.node_ids} - known)
    assert not missing, f"docs/readme-claims.md names node ids that pytest does not collect: {missing}"


def test_every_readme_claims_scenario_is_in_the_table() -> None:
    named = {n for row in claim_rows() for n in row.node_ids}
    ours = {n for n in collected() if n.startswith("scenarios/test_readme_claims.py::")}
    assert ours, "scenarios/test_readme_claims.py collected nothing"
    assert ours <= named, f"scenarios missing from docs/readme-claims.md: {sorted(ours - named)}"


def test_quotes_are_on_the_cited_readme_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    squash = re.compile(r"\s+")
    for row in claim_rows():
        assert row.last <= len(lines), f"line {row.last} is past the README's {len(lines)} lines: {row.text}"
        cited = squash.sub(" ", " ".join(lines[row.first - 1 : row.last]))
        for quote in row.quotes:
            assert squash.sub(" ", quote) in cited, f"{quote!r} is not on README lines {row.first}-{row.last}"
