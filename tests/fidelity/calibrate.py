"""Measure the rate checks' false-alarm rate on policies whose prediction is known to be right.

Usage (about two minutes; not part of ``./dev test``)::

    .venv/bin/python -m tests.fidelity.calibrate --checks 300 --alpha 0.05 --out calibration.json

Each known-right case is one the shipped scenarios and the scenario bench confirm (no retries under a
50 % error rate: 50 %; ``attempts: 2, retryOn: 5xx`` under 50 % 503s: 87.5 %; and so on). The same
rate checks as the suite, with a deliberately large per-check alpha so that false alarms are frequent
enough to count, are made over and over. A calibrated check fails about ``alpha`` of the time (the
exact binomial rule fails at most its exact alpha at the planned n); the suite then runs each check at
``0.01 / family`` and Bonferroni bounds the family-wise rate by 0.01.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from scipy.stats import binomtest

from tests.fidelity.cases import Case, FaultSpec, LoadSpec
from tests.fidelity.conftest import Meshes
from tests.fidelity.run import run_example

KNOWN_RIGHT = (
    Case("1.30", {"retries": {"attempts": 0}}, {}, (FaultSpec("error", 0.5, 503),), LoadSpec("closed", 8)),
    Case(
        "1.30",
        {"retries": {"attempts": 2, "retryOn": "5xx"}},
        {},
        (FaultSpec("error", 0.5, 503),),
        LoadSpec("closed", 8),
    ),
    Case("1.30", {"retries": {"attempts": 0}}, {}, (FaultSpec("reset", 0.25),), LoadSpec("closed", 8)),
    Case("1.23", {"retries": {"attempts": 0}}, {}, (FaultSpec("error", 0.1, 500),), LoadSpec("open", rate=1000.0)),
)


def main() -> None:
    """Run the known-right cases until ``--checks`` rate checks are made; print and save the rates."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=300, help="rate checks to make (default 300)")
    parser.add_argument("--alpha", type=float, default=0.05, help="per-check alpha (default 0.05)")
    parser.add_argument("--delta", type=float, default=0.1, help="delta of each check (default 0.1)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    meshes = Meshes(seed=int(time.time()))
    made = failed = exact_made = exact_failed = 0
    failures: list[str] = []
    started = time.monotonic()
    try:
        i = 0
        while made < args.checks:
            case = KNOWN_RIGHT[i % len(KNOWN_RIGHT)]
            i += 1
            checks, _ = run_example(meshes, case, alpha_check=args.alpha, beta=0.05, delta=args.delta)
            for c in checks:
                if c.statistical:
                    made += 1
                    failed += not c.passed
                else:
                    exact_made += 1
                    exact_failed += not c.passed
                if not c.passed:
                    failures.append(f"{case.route} {case.faults}: {c}")
    finally:
        meshes.stop()
    ci = binomtest(failed, made).proportion_ci(confidence_level=0.95, method="exact")
    result = {
        "rate_checks": made,
        "rate_checks_failed": failed,
        "false_alarm_rate": failed / made,
        "false_alarm_rate_95ci": [ci.low, ci.high],
        "nominal_alpha": args.alpha,
        "exact_checks": exact_made,
        "exact_checks_failed": exact_failed,
        "examples": i,
        "seconds": round(time.monotonic() - started, 1),
        "failures": failures,
        # What the observed rate implies for the suite: each check at 0.01 / family, Bonferroni-summed.
        "implied_family_rate_bound": None if made == 0 else min(1.0, 0.01 * max(1.0, ci.high / args.alpha)),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    if not math.isfinite(result["false_alarm_rate"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
