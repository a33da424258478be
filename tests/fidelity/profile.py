"""The suite's profiles (``ci``, ``nightly``, ``off``), chosen by environment variables.

| Variable | Meaning | Default |
|---|---|---|
| ``MESHCHECK_FIDELITY`` | ``ci``, ``nightly`` or ``off`` | ``ci`` |
| ``MESHCHECK_FIDELITY_MINUTES`` | time budget of ``nightly`` | 30 |
| ``MESHCHECK_FIDELITY_SEED`` | seed of the run (an integer); printed on failure | random |
| ``MESHCHECK_FIDELITY_DB`` | hypothesis' example database directory | ``.hypothesis/fidelity`` |
| ``MESHCHECK_FIDELITY_FOUND`` | where counterexamples are written | ``tests/fidelity/found`` |
| ``MESHCHECK_FIDELITY_OUT`` | where ``summary.json`` (examples, checks, timings) is written | not written |

Environment variables rather than pytest options: ``./dev test`` collects this directory with every other
test, and a ``conftest.py`` below the rootdir cannot add command-line options.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.fidelity.predict import RATE_CHECKS_PER_EXAMPLE

HERE = Path(__file__).resolve().parent
FAMILY_ALPHA = 0.01  # the chance that a run whose model is right reports any rate-check failure
BETA = 0.05


@dataclass(frozen=True)
class Profile:
    """How much a run explores and how it controls its errors.

    Attributes:
        name: ``ci`` or ``nightly``.
        max_examples: The most examples a run makes; the Bonferroni family is planned on it.
        seconds: Time budget; the run stops generating once it is spent.
        delta: The model-mesh disagreement in a rate that each rate check catches with ``1 - BETA``.
        shrink: Let hypothesis shrink a counterexample (minutes of extra examples).
        seed: The run's seed.
        database: Hypothesis' example database directory.
        found: Directory for counterexample files.
        out: Directory for ``summary.json``, or ``None``.
    """

    name: str
    max_examples: int
    seconds: float
    delta: float
    shrink: bool
    seed: int
    database: Path
    found: Path
    out: Path | None

    @property
    def max_rate_checks(self) -> int:
        """The size of the Bonferroni family: every rate check the run may make."""
        return self.max_examples * RATE_CHECKS_PER_EXAMPLE

    @property
    def alpha_check(self) -> float:
        """Each rate check's false-fail rate: the family-wise alpha split over the family (Bonferroni)."""
        return FAMILY_ALPHA / self.max_rate_checks


class ProfileError(ValueError):
    """A fidelity environment variable has a value the suite cannot use."""


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProfileError(f"{name}={raw!r} is not a number; set e.g. {name}=30") from None
    if value <= 0:
        raise ProfileError(f"{name}={raw!r} must be greater than 0")
    return value


def load_profile() -> Profile | None:
    """The profile the environment selects, or ``None`` for ``off``.

    Raises:
        ProfileError: An unknown profile name or a malformed number, naming the variable and the fix.
    """
    name = os.environ.get("MESHCHECK_FIDELITY", "ci").strip() or "ci"
    if name == "off":
        return None
    raw_seed = os.environ.get("MESHCHECK_FIDELITY_SEED", "")
    try:
        seed = int(raw_seed) if raw_seed else secrets.randbits(32)
    except ValueError:
        raise ProfileError(f"MESHCHECK_FIDELITY_SEED={raw_seed!r} is not an integer; set e.g. 12345") from None
    common = {
        "seed": seed,
        "database": Path(os.environ.get("MESHCHECK_FIDELITY_DB", ".hypothesis/fidelity")),
        "found": Path(os.environ.get("MESHCHECK_FIDELITY_FOUND", str(HERE / "found"))),
        "out": Path(os.environ["MESHCHECK_FIDELITY_OUT"]) if os.environ.get("MESHCHECK_FIDELITY_OUT") else None,
    }
    if name == "ci":
        # 25 examples of about 1-2 s each, hard-stopped at 90 s so that ./dev test stays within 2 minutes.
        return Profile("ci", 25, 90.0, 0.15, False, **common)  # type: ignore[arg-type]
    if name == "nightly":
        minutes = _env_number("MESHCHECK_FIDELITY_MINUTES", 30.0)
        # At most one example per second: the family is planned on that ceiling, so alpha holds however fast.
        return Profile("nightly", int(minutes * 60), minutes * 60, 0.1, True, **common)  # type: ignore[arg-type]
    raise ProfileError(f"MESHCHECK_FIDELITY={name!r} is unknown; use ci (the default), nightly or off")
