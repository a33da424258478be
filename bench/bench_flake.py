"""Flake bench: run the scenario suite N times, each with a fresh ``--mesh-seed``, and list every failure.

Run from the repository root: ``.venv/bin/python bench/bench_flake.py [--runs 20] [--workers 2]``.

A verdict's error rates hold over seeds (the chaos draws), not for one seed: the default seed repeats
much of the same fault sequence run after run. Each run here draws its seed from the system's random
source and prints it, so a failure can be replayed with ``--mesh-seed``. Every scenario that did not
end as expected (passed, or xfailed for the strict expected failures) is a false failure, listed with
its failed checks, their intervals and the seed. False failures are bugs: find the cause; never widen
a delta to hide one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"passed", "xfailed"}
KEEP = Path(tempfile.gettempdir()) / "meshcheck-flake-failures"
TIMINGS = Path(tempfile.gettempdir()) / f"meshcheck-flake-timings-{os.getpid()}.jsonl"


def run_once(seed: int, workers: int) -> tuple[float, list[dict[str, object]], int, str]:
    with tempfile.TemporaryDirectory(prefix="meshcheck-flake-") as tmp:
        cmd = [sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider", "--mesh-seed", str(seed)]
        cmd += ["--mesh-report-dir", tmp] + (["-n", str(workers)] if workers > 1 else [])
        # The harness's wait timings of every run (bench/scenario_timing_plugin.py), summed in the summary.
        cmd += ["-p", "scenario_timing_plugin"]
        env = {
            **os.environ,
            "MESHCHECK_TIMINGS_FILE": str(TIMINGS),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])),
        }
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
        wall = time.monotonic() - t0
        bad = []
        for path in sorted(Path(tmp).glob("*.json")):
            data = json.loads(path.read_text())
            if "nodeid" not in data or data["outcome"] in EXPECTED:
                continue
            checks = [
                f"{c['name']}: {c.get('outcome')} observed {c.get('observed')} "
                f"interval {c.get('interval')} n {c.get('n')}; {str(c.get('detail', ''))[:300]}"
                for c in data.get("checks", [])
                if not c.get("passed")
            ]
            bad.append({"scenario": data["nodeid"], "outcome": data["outcome"], "checks": checks})
            # Keep the failing record (with its report) for the post-mortem: the run's directory is deleted.
            keep = KEEP / str(seed)
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        # A scenario whose record was never written (an error in set-up or teardown) shows only in pytest's
        # short summary: list those too.
        recorded = {str(b["scenario"]) for b in bad}
        for line in out.stdout.splitlines():
            word, _, rest = line.partition(" ")
            nodeid = rest.split(" - ", 1)[0]
            if word in ("FAILED", "ERROR") and nodeid not in recorded:
                bad.append({"scenario": nodeid, "outcome": word.lower() + " (pytest)", "checks": [rest[-300:]]})
        if out.returncode not in (0, 1):
            print(out.stdout[-2000:], out.stderr[-2000:])
        # The run's own statement of its false-fail budget: its rate checks and the sum of their alphas.
        budget = next((line for line in out.stdout.splitlines() if " rate checks; " in line), "")
        return wall, bad, out.returncode, budget.removeprefix("meshcheck: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rng = random.SystemRandom()
    failures = 0
    walls = []
    for i in range(args.runs):
        seed = rng.randrange(1, 2**31)
        load_before = os.getloadavg()[0]
        wall, bad, code, budget = run_once(seed, args.workers)
        walls.append(wall)
        failures += len(bad)
        # The machine is shared: the load average says whether a failure came with a busy machine.
        print(
            f"run {i + 1}/{args.runs}: seed {seed}, exit {code}, {wall:.1f} s, {len(bad)} unexpected outcome(s); "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {budget}",
            flush=True,
        )
        for b in bad:
            print(f"  {b['scenario']}: {b['outcome']}")
            for c in b["checks"]:  # type: ignore[attr-defined]
                print(f"    {c}")
    print(f"\n{failures} false failure(s) in {args.runs} runs; median wall {sorted(walls)[len(walls) // 2]:.1f} s")
    totals: dict[str, float] = {}
    for line in TIMINGS.read_text().splitlines() if TIMINGS.exists() else []:
        for kind, seconds in json.loads(line).get("waits", {}).items():
            totals[kind] = totals.get(kind, 0.0) + seconds / args.runs
    print("seconds per run, summed over scenarios: " + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()))
    print(f"(per-scenario timings: {TIMINGS})")


if __name__ == "__main__":
    main()
