"""The model and the real mesh agree on random policies, faults and loads (differential fidelity, issue #12).

For each example hypothesis draws (``strategies.cases``): load the policy, predict with the model and
plan the rate checks (``predict.predict``), run it on the local mesh, and decide every check the
prediction supports (``run.decide_all``). Any failed check fails the example; hypothesis then shrinks it
(``nightly``) and the minimal counterexample is written to ``found/`` to be judged and kept as a
regression case (``test_found.py``).

Rate checks control the family-wise error with Bonferroni: each uses ``FAMILY_ALPHA / max_rate_checks``
of the profile, sized by the project's planner. See docs/explanation/fidelity.md.
"""

from __future__ import annotations

import json
import random
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fidelity.cases import Case, save_found
from tests.fidelity.conftest import Meshes
from tests.fidelity.profile import BETA, FAMILY_ALPHA, Profile, load_profile
from tests.fidelity.run import KnownOpen, OutOfBounds, run_example
from tests.fidelity.strategies import cases

pytestmark = pytest.mark.envoy

# Examples per hypothesis run; a long budget is many runs with fresh seeds from the run's seed (ci makes two).
CHUNK = 20


def _fresh(fn: Callable[..., None]) -> Callable[..., None]:
    """A new function object with ``fn``'s code: hypothesis refuses a second ``settings`` on one function.

    Same code, so the same database key (hypothesis digests the source): each chunk replays earlier failures.
    """
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


@dataclass
class Tally:
    """What a run did, for the summary and the docs' numbers."""

    examples: int = 0
    seconds: float = 0.0
    rate_checks: int = 0
    exact_checks: int = 0
    out_of_bounds: int = 0
    known_open: int = 0
    skipped_rate: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, profile: Profile, elapsed: float) -> dict[str, Any]:
        return {
            "profile": profile.name,
            "seed": profile.seed,
            "elapsed_s": round(elapsed, 1),
            "examples": self.examples,
            "examples_per_minute": round(self.examples / (elapsed / 60), 1) if elapsed else 0,
            "seconds_per_example": round(self.seconds / self.examples, 2) if self.examples else 0,
            "rate_checks": self.rate_checks,
            "exact_checks": self.exact_checks,
            "checks_per_example": round((self.rate_checks + self.exact_checks) / self.examples, 2)
            if self.examples
            else 0,
            "family_alpha": FAMILY_ALPHA,
            "alpha_per_rate_check": profile.alpha_check,
            "bonferroni_family": profile.max_rate_checks,
            "delta": profile.delta,
            "beta": BETA,
            "rate_checks_skipped": self.skipped_rate,
            "rejected_out_of_bounds": self.out_of_bounds,
            "rejected_known_open": self.known_open,
            "failures": self.failures,
        }


def test_model_agrees_with_the_mesh(fidelity_meshes: Meshes) -> None:
    profile = load_profile()
    if profile is None:
        pytest.skip("MESHCHECK_FIDELITY=off")
    tally = Tally()
    started = time.monotonic()
    deadline = started + profile.seconds
    last: dict[str, Any] = {}

    db = DirectoryBasedExampleDatabase(str(profile.database))

    def example(case: Case) -> None:
        # Past the budget (or the planned family size) an example does nothing, so the chunk ends at once.
        # Once an example failed, every example runs: shrinking must not stop half-way.
        if (time.monotonic() > deadline or tally.examples >= profile.max_examples) and not last:
            return
        t0 = time.monotonic()
        try:
            checks, skipped = run_example(
                fidelity_meshes, case, alpha_check=profile.alpha_check, beta=BETA, delta=profile.delta
            )
        except OutOfBounds:
            tally.out_of_bounds += 1
            assume(False)
        except KnownOpen:
            tally.known_open += 1
            assume(False)
        tally.examples += 1
        tally.seconds += time.monotonic() - t0
        tally.rate_checks += sum(c.statistical for c in checks)
        tally.exact_checks += sum(not c.statistical for c in checks)
        if skipped:
            key = skipped.split(":")[0]
            tally.skipped_rate[key] = tally.skipped_rate.get(key, 0) + 1
        failed = [str(c) for c in checks if not c.passed]
        if failed:
            last["case"], last["failed"] = case, failed
            raise AssertionError(
                f"model and mesh disagree (seed {profile.seed}):\n{case.policy_yaml()}\nfaults: {case.faults}\n"
                f"load: {case.load}\nistio: {case.istio}\n" + "\n".join(str(c) for c in checks)
            )

    rnd = random.Random(profile.seed)
    errors: list[str] = []
    try:
        while time.monotonic() < deadline and tally.examples < profile.max_examples:
            # Replay the database's failures only in the first chunk: later chunks would meet them again at once.
            phases = [Phase.explicit, Phase.generate] + ([Phase.reuse] if not errors else [])
            phases += [Phase.shrink] if profile.shrink else []
            chunk = settings(
                max_examples=CHUNK,
                deadline=None,
                database=db,
                phases=phases,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
                print_blob=True,
            )(_fresh(example))
            last.clear()
            try:
                seed(rnd.getrandbits(64))(given(case=cases())(chunk))()
            except Exception as exc:
                if not last:
                    raise  # not a disagreement: a broken mesh or a bug in the suite
                # Keep going: one run reports every counterexample it finds within its budget.
                path = save_found(profile.found, last["case"], last["failed"], profile.seed)
                tally.failures.append({"file": str(path), "failed": last["failed"]})
                errors.append(f"{path}:\n{exc}")
    finally:
        summary = tally.summary(profile, time.monotonic() - started)
        print(json.dumps(summary, indent=2))
        if profile.out is not None:
            profile.out.mkdir(parents=True, exist_ok=True)
            (profile.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if errors:
        pytest.fail(
            f"{len(errors)} counterexample(s) written to {profile.found}; judge each (see test_found.py):\n\n"
            + "\n\n".join(errors),
            pytrace=False,
        )
