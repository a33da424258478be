"""Requests per verdict: the SPRT (Ville's boundaries) against the fixed-sample exact binomial check.

For each claim below, at alpha = 0.001 and the stated beta, it prints the fixed-sample ``n`` that
``RateRule(...).plan()`` sends, and, over simulated streams of Bernoulli requests, the SPRT's mean and 95th
percentile number of requests per verdict and its observed error rates:

- under H0 (true rate = the claim): how often the SPRT fails a policy that holds the claim (false-fail
  rate; the target is alpha);
- under H1 (true rate = claim - delta): how often it passes a policy off by delta (miss rate; target beta).

The SPRT is simulated vectorised with numpy, in blocks until every stream has decided; the first streams
of each run are also fed to :class:`pytest_meshcheck.verdict.SequentialTest` and must reach the same
decision after the same number of requests, so the figures are the module's and not a re-implementation's.

A second table gives the same error rates and mean sizes exactly, by dynamic programming over the number
of failures so far (no sampling noise), next to Wald's approximation of the mean,
``SequentialTest.average_sample_number()``. Read the simulated rates against it: with 2000 streams a rate
of 0.05 has a standard error of about 0.005.

Two-sided claims are left out: the SPRT here is one-sided per direction.

Run from the repository root::

    .venv/bin/python bench/bench_sequential.py [--seed 12345] [--streams 2000]

Without ``--seed`` a fresh seed is drawn and printed first, so any run can be repeated.
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_meshcheck.verdict import RateRule, SequentialTest

ALPHA = 0.001
BLOCK = 512  # requests simulated per stream per round
CHECKED = 50  # streams per run replayed through SequentialTest
GIVE_UP = 200_000  # a stream still undecided after this many requests counts as undecided


@dataclass(frozen=True)
class Claim:
    """An at-least claim and its error-rate targets."""

    expected: float
    delta: float
    beta: float = 0.05

    @property
    def label(self) -> str:
        """How the claim reads in the table."""
        return f">= {self.expected:g}, delta {self.delta:g}, beta {self.beta:g}"


CLAIMS = [
    Claim(0.875, 0.125),
    Claim(0.9919, 0.0189),
    Claim(0.99, 0.017),
    Claim(0.875, 0.0625, beta=0.001),
]


@dataclass(frozen=True)
class Run:
    """The SPRT's outcomes over many streams at one true rate."""

    passes: int
    fails: int
    undecided: int
    sizes: np.ndarray

    @property
    def streams(self) -> int:
        """Streams simulated."""
        return len(self.sizes)


def simulate(claim: Claim, p_true: float, streams: int, rng: np.random.Generator) -> Run:
    """Run the one-sided SPRT of ``claim`` on ``streams`` independent streams at rate ``p_true``."""
    p0, p1 = claim.expected, claim.expected - claim.delta
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    fail_at, pass_at = math.log(1 / ALPHA), math.log(claim.beta)
    llr = np.zeros(streams)
    sizes = np.zeros(streams, dtype=np.int64)
    decision = np.zeros(streams, dtype=np.int8)  # 1 pass, -1 fail, 0 still running
    recorded: list[list[bool]] = [[] for _ in range(CHECKED)]
    while True:
        active = np.flatnonzero((decision == 0) & (sizes < GIVE_UP))
        if active.size == 0:
            break
        draws = rng.random((active.size, BLOCK)) < p_true
        for row in np.flatnonzero(active < CHECKED):
            recorded[active[row]].extend(draws[row].tolist())
        steps = np.where(draws, up, down)
        # prepend the running sum, so that each row is summed left to right exactly like SequentialTest
        walk = np.cumsum(np.column_stack([llr[active], steps]), axis=1)[:, 1:]
        fail = walk >= fail_at
        crossed = fail | (walk <= pass_at)
        hit = crossed.any(axis=1)
        first = crossed.argmax(axis=1)
        done, first_done = active[hit], first[hit]
        decision[done] = np.where(fail[np.flatnonzero(hit), first_done], -1, 1)
        sizes[done] += first_done + 1
        running = active[~hit]
        sizes[running] += BLOCK
        llr[running] = walk[~hit, -1]
    for stream in range(min(CHECKED, streams)):
        test = SequentialTest(claim.expected, claim.delta, alpha=ALPHA, beta=claim.beta)
        outcome = test.update_many(recorded[stream])
        mine = {1: "pass", -1: "fail"}.get(int(decision[stream]), "continue")
        if (outcome, test.n) != (mine, int(sizes[stream])):
            raise SystemExit(
                f"simulation disagrees with SequentialTest on stream {stream} of {claim.label} at p={p_true:g}: "
                f"{mine} after {sizes[stream]} vs {outcome} after {test.n}"
            )
    return Run(
        int(np.count_nonzero(decision == 1)),
        int(np.count_nonzero(decision == -1)),
        int(np.count_nonzero(decision == 0)),
        sizes,
    )


def exact(claim: Claim, p_true: float) -> tuple[float, float, float]:
    """Exact P(pass), P(fail) and mean requests of the SPRT at ``p_true``, up to 1e-12 of unresolved mass.

    The log-likelihood ratio after n requests depends only on the failures f among them, so the mass of
    the streams still running is a vector over f; each request shifts it, and mass past a boundary stops.
    """
    p0, p1 = claim.expected, claim.expected - claim.delta
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    fail_at, pass_at = math.log(1 / ALPHA), math.log(claim.beta)
    running = np.array([1.0])
    passed = failed = mean_n = 0.0
    n = 0
    while running.sum() > 1e-12 and n < GIVE_UP:
        n += 1
        step = np.zeros(running.size + 1)
        step[:-1] += running * p_true
        step[1:] += running * (1 - p_true)
        failures = np.arange(step.size)
        llr = (n - failures) * up + failures * down
        fail, accept = llr >= fail_at, llr <= pass_at
        failed += float(step[fail].sum())
        passed += float(step[accept].sum())
        mean_n += n * float(step[fail | accept].sum())
        step[fail | accept] = 0.0
        running = step
    return passed, failed, mean_n


def main() -> None:
    """Parse the arguments, simulate every claim under H0 and H1, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="seed for every simulation (default: a fresh one)")
    parser.add_argument("--streams", type=int, default=2000, help="simulated streams per claim and hypothesis")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    print(f"seed {seed} (repeat with --seed {seed}); {args.streams} streams per row; alpha = {ALPHA:g}")
    print()
    header = (
        f"{'claim':<34} {'fixed n':>7} | {'H0 mean':>7} {'H0 p95':>6} {'false-fail':>10} | "
        f"{'H1 mean':>7} {'H1 p95':>6} {'miss':>7}"
    )
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    for index, claim in enumerate(CLAIMS):
        fixed = RateRule(claim.expected, "at-least", claim.delta, ALPHA, claim.beta).plan()
        h0 = simulate(claim, claim.expected, args.streams, np.random.default_rng([seed, index, 0]))
        h1 = simulate(claim, claim.expected - claim.delta, args.streams, np.random.default_rng([seed, index, 1]))
        wald = SequentialTest(claim.expected, claim.delta, alpha=ALPHA, beta=claim.beta)
        print(
            f"{claim.label:<34} {fixed.n:>7} | {h0.sizes.mean():>7.1f} {np.percentile(h0.sizes, 95):>6.0f} "
            f"{h0.fails / h0.streams:>10.4f} | {h1.sizes.mean():>7.1f} {np.percentile(h1.sizes, 95):>6.0f} "
            f"{h1.passes / h1.streams:>7.4f}"
        )
        if h0.undecided or h1.undecided:
            print(f"  undecided after {GIVE_UP} requests: {h0.undecided} under H0, {h1.undecided} under H1")
    print()
    print(
        "fixed n: RateRule(claim, 'at-least', delta, alpha, beta).plan().n (exact false-fail <= alpha, miss <= "
        "beta);\nmean/p95: SPRT requests per verdict; false-fail: share of H0 streams failed (target <= alpha); "
        "miss: share\nof H1 streams passed (target <= beta)."
    )
    print(f"(simulated in {time.perf_counter() - started:.1f} s)")
    print()
    header = (
        f"{'exact':<34} {'fixed n':>7} | {'H0 mean':>7} {'false-fail':>10} | {'H1 mean':>7} {'miss':>7} | "
        f"{'Wald H0':>7} {'Wald H1':>7}"
    )
    print(header)
    print("-" * len(header))
    for claim in CLAIMS:
        fixed = RateRule(claim.expected, "at-least", claim.delta, ALPHA, claim.beta).plan()
        _, false_fail, mean_h0 = exact(claim, claim.expected)
        miss, _, mean_h1 = exact(claim, claim.expected - claim.delta)
        wald = SequentialTest(claim.expected, claim.delta, alpha=ALPHA, beta=claim.beta)
        print(
            f"{claim.label:<34} {fixed.n:>7} | {mean_h0:>7.1f} {false_fail:>10.5f} | {mean_h1:>7.1f} {miss:>7.5f} | "
            f"{wald.average_sample_number('h0'):>7.1f} {wald.average_sample_number('h1'):>7.1f}"
        )


if __name__ == "__main__":
    main()
