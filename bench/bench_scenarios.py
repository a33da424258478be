"""Benchmark of the main job: each scenario's wall time and request count, the suite serial and with -n 2.

Run: ``.venv/bin/python bench/bench_scenarios.py`` (about 5 minutes). Prints a table per run and the
suite wall times. Numbers come from the scenario records (JSON) the run writes, so they are the same
figures the reports show.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]


def run_suite(extra: list[str]) -> tuple[float, list[dict[str, object]]]:
    with tempfile.TemporaryDirectory(prefix="meshcheck-bench-") as tmp:
        cmd = [sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider"]
        cmd += ["--mesh-report-dir", tmp, *extra]
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-2000:])
            raise SystemExit(f"suite failed with exit code {out.returncode}")
        rows = []
        for path in sorted(Path(tmp).glob("*.json")):
            data = json.loads(path.read_text())
            if "nodeid" not in data:
                continue
            rows.append(
                {
                    "scenario": data["nodeid"].split("::", 1)[-1],
                    "outcome": data["outcome"],
                    "wall_s": round(data["ended_at"] - data["started_at"], 2),
                    "requests": sum(phase["requests"] for phase in data.get("load", [])),
                }
            )
        return wall, rows


def main() -> None:
    results = {}
    for label, extra in (("serial", []), ("-n 2", ["-n", "2"])):
        wall, rows = run_suite(extra)
        results[label] = wall
        print(
            f"\n== {label}: suite wall time {wall:.1f} s, {len(rows)} scenarios, "
            f"{sum(int(r['requests']) for r in rows)} requests"
        )  # type: ignore[call-overload]
        if label == "serial":
            print(tabulate(rows, headers="keys"))
    print(f"\nsuite wall time: serial {results['serial']:.1f} s, -n 2 {results['-n 2']:.1f} s")


if __name__ == "__main__":
    main()
