"""Benchmark of the main job: where each scenario's time goes, and the suite's wall time serial and with -n 2.

Run from the repository root::

    .venv/bin/python bench/bench_scenarios.py                      # all scenarios, serial then -n 2
    .venv/bin/python bench/bench_scenarios.py --only old --modes serial
    .venv/bin/python bench/bench_scenarios.py --only call-graph --modes serial

``old`` is every scenario outside ``scenarios/test_call_graph.py``. For each mode it prints the suite's
wall time and, per scenario, its time split into traffic and each kind of wait, as the harness measured
it (``pytest_meshcheck/harness/timing.py``; the bench only loads ``bench/scenario_timing_plugin.py`` to
collect the figures). ``other`` is the rest of the scenario's pytest time: fixture set-up (the mesh start
for a worker's first test), the test's own code, planning and deciding the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
CALL_GRAPH = "scenarios/test_call_graph.py"
# Short column names for the wait kinds of pytest_meshcheck.harness.timing, in the order printed.
COLUMNS = {
    "traffic": "traffic",
    "load engine start/stop": "load±",
    "scrape: window start": "scr start",
    "scrape: window end": "scr end",
    "scrape: gauge wait": "gauge",
    "policy push": "policy",
    "policy restore (teardown)": "restore",
    "chaos apply": "chaos+",
    "chaos revert": "chaos-",
    "report: Prometheus evidence": "rep prom",
    "log flush: response flags": "flags",
    "log flush: sample requests (and join)": "samples",
    "report: write JSON/HTML": "write",
}
SLEEP = "sleeps"


def _targets(only: str) -> list[str]:
    if only == "call-graph":
        return [CALL_GRAPH]
    if only == "old":
        files = sorted((ROOT / "scenarios").glob("test_*.py"))
        return [str(p.relative_to(ROOT)) for p in files if p.name != Path(CALL_GRAPH).name]
    return ["scenarios"]


def run_suite(only: str, workers: int, extra: list[str]) -> tuple[float, int, list[dict[str, object]]]:
    """Run the scenarios once; return the wall time, pytest's exit code and one row per scenario."""
    with tempfile.TemporaryDirectory(prefix="meshcheck-bench-") as tmp:
        timings = Path(tmp) / "timings.jsonl"
        cmd = [sys.executable, "-m", "pytest", *_targets(only), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
        cmd += ["-p", "scenario_timing_plugin", "--mesh-report-dir", str(Path(tmp) / "reports"), *extra]
        cmd += ["-n", str(workers)] if workers > 1 else []
        env = {
            **os.environ,
            "MESHCHECK_TIMINGS_FILE": str(timings),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])),
        }
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
        wall = time.monotonic() - t0
        if out.returncode not in (0, 1):
            print(out.stdout[-3000:], out.stderr[-2000:])
        elif out.returncode == 1:
            print(out.stdout[-1500:])
        merged: dict[str, dict[str, object]] = defaultdict(dict)
        lines = timings.read_text().splitlines() if timings.exists() else []
        for line in lines:
            data = json.loads(line)
            merged[data["nodeid"]].update(data)
        return wall, out.returncode, [_row(nodeid, data) for nodeid, data in merged.items() if "waits" in data]


def _row(nodeid: str, data: dict[str, object]) -> dict[str, object]:
    waits: dict[str, float] = data["waits"]  # type: ignore[assignment]
    phases: dict[str, float] = data.get("phases", {})  # type: ignore[assignment]
    total = sum(phases.values())
    row: dict[str, object] = {"scenario": nodeid.split("::", 1)[-1][:58], "outcome": data["outcome"]}
    row["wall"] = total
    for kind, col in COLUMNS.items():
        row[col] = waits.get(kind, 0.0)
    row[SLEEP] = sum(v for k, v in waits.items() if k.startswith("fixed sleep"))
    row["other"] = total - sum(waits.values())
    row["requests"] = data["requests"]
    return row


def _print(rows: list[dict[str, object]], per_scenario: bool) -> None:
    numeric = ["wall", *COLUMNS.values(), SLEEP, "other"]
    total: dict[str, object] = {"scenario": f"TOTAL ({len(rows)} scenarios)", "outcome": ""}
    for col in numeric:
        total[col] = sum(float(r[col]) for r in rows)  # type: ignore[arg-type]
    total["requests"] = sum(int(r["requests"]) for r in rows)  # type: ignore[call-overload]
    shown = (rows if per_scenario else []) + [total]
    print(tabulate(shown, headers="keys", floatfmt=".2f"))
    wall = float(total["wall"])  # type: ignore[arg-type]
    waits = wall - float(total["traffic"]) - float(total["other"])  # type: ignore[arg-type]
    print(f"traffic {float(total['traffic']):.1f} s, measured waits {waits:.1f} s, other {float(total['other']):.1f} s")  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("all", "old", "call-graph"), default="all")
    parser.add_argument("--modes", default="serial,-n 2", help="comma-separated: serial and/or '-n 2'")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after --, such as --mesh-seed 7")
    args = parser.parse_args()
    walls = {}
    for mode in [m.strip() for m in args.modes.split(",")]:
        workers = int(mode.split()[-1]) if mode.startswith("-n") else 1
        wall, code, rows = run_suite(args.only, workers, args.pytest_args)
        walls[mode] = wall
        print(f"\n== {args.only} scenarios, {mode}: suite wall time {wall:.1f} s, pytest exit {code}")
        _print(rows, per_scenario=workers == 1)
    print("\nsuite wall time: " + ", ".join(f"{m} {w:.1f} s" for m, w in walls.items()))


if __name__ == "__main__":
    main()
