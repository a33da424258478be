"""Envoy's retry back-off as a distribution, and a goodness-of-fit test of measured waits against it.

Envoy 1.40 (``source/common/common/backoff_strategy.cc``, ``JitteredExponentialBackOffStrategy``) waits
``random() % next_interval`` whole milliseconds before a retry, where ``next_interval`` starts at the base
(25 ms unless ``retries.backoff`` is honoured) and doubles after each retry up to ``max_interval`` (10 x base;
istiod never sets it). Retry n therefore waits a whole number of milliseconds uniform on
``{0, ..., cap_n - 1}``, ``cap_n = min(base x 2^(n-1), 10 x base)``: the caps of
:func:`~pytest_meshcheck.expect.timeouts.backoff_ranges`. Two rival models are kept to measure against:
the platform README's fixed waits (25, 50, 100 ms) and the ``(2^n - 1) x base`` of Envoy's router docs (the
pre-2020 code: 25, 75, 175 ms).

**What is measured.** Each sidecar logs every upstream attempt with its start (microseconds) and its
``%DURATION%`` (whole milliseconds, truncated). The gap from one attempt's logged end to the next attempt's
start is the wait ``B`` plus Envoy's own work and timer lateness ``e`` (``0 <= e <= tolerance``), plus what
the truncated duration leaves out (``[0, 1)`` ms). So ``gap - 1 ms - tolerance < B <= gap``.

**The test.** A one-sample Kolmogorov-Smirnov test on the probability integral transforms of the waits,
pooled over retries: under the model each ``U_i = F_n(B_i)`` (randomised at the atoms of the discrete
distribution) is uniform on [0, 1], and independent. ``B`` is known only within the interval above, so
``U_i`` lies in ``[u_lo, u_hi] = [P(B < gap - 1 ms - tolerance), P(B <= gap)]``. The statistic is
``max(sup(ECDF(u_hi) - x), sup(x - ECDF(u_lo)))``, which never exceeds the two-sided KS statistic of the
unknown ``U``: comparing it with the exact KS critical value (``scipy.stats.kstwo``) keeps the false-fail
rate at most alpha, whatever the processing noise within the tolerance. Against a model that is off, the
same statistic grows with the sample: its power is computed exactly for the fixed waits (they are all at
the caps, so every ``u_lo`` is at least ``1 - (1 ms + tolerance) / 25 ms``) and by simulation for the
``(2^n - 1)`` rule, at the least favourable noise (none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import kstwo

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.model import DEFAULT_BACKOFF_BASE

ModelKind = Literal["envoy", "readme-fixed", "docs-2^n-1"]
#: The logged duration of an attempt is whole milliseconds, truncated.
RESOLUTION_MS = 1.0
#: Envoy's own work between an attempt's last byte and the next attempt's start, plus timer lateness, on two
#: shared cores: 0.3-2 ms measured over 300 gaps (an idle machine); a few outliers above only move the
#: statistic by 1/n each.
DEFAULT_TOLERANCE_MS = 3.0
#: Monte Carlo repetitions of a power estimate; the sample is planned on a 99 % lower confidence bound of it.
POWER_SIMULATIONS = 4000


@dataclass(frozen=True)
class BackoffModel:
    """What one rule says about the wait before each retry, in whole milliseconds.

    Attributes:
        kind: ``envoy`` (jittered, uniform on ``{0..cap-1}``), ``readme-fixed`` (exactly the cap) or
            ``docs-2^n-1`` (jittered, caps ``(2^n - 1) x base``).
        caps_ms: The cap of retry 1, 2, ... in milliseconds.
        name: A one-line description for check names and messages.
    """

    kind: ModelKind
    caps_ms: tuple[int, ...]
    name: str

    def cap(self, retry: int) -> int:
        """The cap of retry ``retry`` (1-based); retries past the list keep the last cap."""
        return self.caps_ms[min(retry, len(self.caps_ms)) - 1]

    def cdf(self, retry: np.ndarray, x: np.ndarray, *, strict: bool = False) -> np.ndarray:
        """``P(B <= x)`` (``P(B < x)`` when ``strict``) for the wait ``B`` before each ``retry``, ``x`` in ms."""
        table = np.asarray(self.caps_ms, dtype=float)
        caps = table[np.minimum(np.asarray(retry, dtype=int), len(table)) - 1]
        x = np.asarray(x, dtype=float)
        if self.kind == "readme-fixed":
            return np.asarray(np.where(x > caps, 1.0, 0.0) if strict else np.where(x >= caps, 1.0, 0.0), dtype=float)
        # Uniform on the integers 0..cap-1: P(B <= x) = (floor(x) + 1) / cap, P(B < x) = ceil(x) / cap.
        count = np.ceil(x) if strict else np.floor(x) + 1.0
        return np.asarray(np.clip(count / caps, 0.0, 1.0), dtype=float)

    def sample(self, retries: int, requests: int, rng: np.random.Generator) -> np.ndarray:
        """Waits (ms) of ``requests`` requests with ``retries`` retries each, shape ``(requests, retries)``."""
        caps = np.asarray([self.cap(n) for n in range(1, retries + 1)], dtype=float)
        if self.kind == "readme-fixed":
            return np.tile(caps, (requests, 1))
        return np.asarray(np.floor(rng.random((requests, retries)) * caps), dtype=float)


def envoy_model(retries: int, base: float = DEFAULT_BACKOFF_BASE) -> BackoffModel:
    """Envoy 1.40's rule: retry n waits uniform whole ms in ``[0, min(base x 2^(n-1), 10 x base))``."""
    from pytest_meshcheck.expect.model import EffectiveRetry
    from pytest_meshcheck.expect.timeouts import backoff_ranges

    ranges = backoff_ranges(EffectiveRetry(num_retries=retries, backoff_base=base))
    caps = tuple(round(hi * 1000) for _, hi in ranges)
    return BackoffModel("envoy", caps, f"Envoy jittered back-off: uniform in [0, {'/'.join(map(str, caps))}) ms")


def readme_fixed_model(retries: int, base: float = DEFAULT_BACKOFF_BASE) -> BackoffModel:
    """The platform README's rule: retry n waits exactly ``base x 2^(n-1)`` (25, 50, 100 ms)."""
    caps = tuple(round(base * 1000) * 2 ** (n - 1) for n in range(1, retries + 1))
    return BackoffModel("readme-fixed", caps, f"README fixed back-off: exactly {'/'.join(map(str, caps))} ms")


def docs_model(retries: int, base: float = DEFAULT_BACKOFF_BASE) -> BackoffModel:
    """Envoy's router docs (the pre-2020 code): retry n waits uniform in ``[0, (2^n - 1) x base)``, capped."""
    ms = round(base * 1000)
    caps = tuple(min((2**n - 1) * ms, 10 * ms) for n in range(1, retries + 1))
    return BackoffModel("docs-2^n-1", caps, f"(2^n - 1) x base back-off: uniform in [0, {'/'.join(map(str, caps))}) ms")


@dataclass(frozen=True)
class FitResult:
    """The goodness-of-fit test of measured waits against a model.

    Attributes:
        model: The model tested.
        n: Waits tested (pooled over retries).
        statistic: The bounded KS statistic.
        critical: The exact KS critical value at ``alpha`` for ``n``.
        p_value: ``P(D_n >= statistic)`` under the model: a valid (conservative) p-value.
        alpha: The false-fail rate.
        tolerance_ms: Envoy's processing allowed in each gap.
        passed: ``statistic <= critical``.
    """

    model: BackoffModel
    n: int
    statistic: float
    critical: float
    p_value: float
    alpha: float
    tolerance_ms: float
    passed: bool

    @property
    def summary(self) -> str:
        """One line for a check's detail."""
        verdict = "fits" if self.passed else "does not fit"
        return (
            f"{self.n} waits {verdict} {self.model.name}: bounded KS D = {self.statistic:.4f} vs critical "
            f"{self.critical:.4f} at alpha {self.alpha:g} (p = {self.p_value:.3g}; gaps allow "
            f"{RESOLUTION_MS:g} ms of log resolution + {self.tolerance_ms:g} ms of Envoy's processing)"
        )


def pit_bounds(
    model: BackoffModel, retry: np.ndarray, gaps_ms: np.ndarray, tolerance_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``[u_lo, u_hi]`` on each wait's probability integral transform under ``model``."""
    high = model.cdf(retry, gaps_ms)
    low = model.cdf(retry, gaps_ms - RESOLUTION_MS - tolerance_ms, strict=True)
    return low, high


def bounded_ks_statistic(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``max(sup(ECDF(high) - x), sup(x - ECDF(low)))`` over the last axis (one value per row).

    It is at most the two-sided KS statistic of any ``U`` with ``low <= U <= high``.
    """
    n = np.shape(high)[-1]
    if n == 0:
        return np.zeros(np.shape(high)[:-1])
    steps = np.arange(1, n + 1) / n
    d_plus = np.max(steps - np.sort(high, axis=-1), axis=-1)  # ECDF(high) reaches i/n at the i-th smallest
    d_minus = np.max(np.sort(low, axis=-1) - (steps - 1.0 / n), axis=-1)  # it is (i-1)/n just below the i-th low
    return np.asarray(np.maximum(np.maximum(d_plus, d_minus), 0.0), dtype=float)


@lru_cache(maxsize=1024)
def ks_critical(n: int, alpha: float) -> float:
    """The exact two-sided KS critical value: ``P(D_n > c) = alpha`` for ``n`` uniform samples."""
    return float(kstwo.isf(alpha, n))


def fit(
    model: BackoffModel,
    gaps_ms: Mapping[int, Sequence[float]],
    *,
    alpha: float,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> FitResult:
    """Test measured gaps (ms, by retry number) against ``model`` at false-fail rate ``alpha``.

    Raises:
        MeshcheckError: No gap to test, or alpha outside (0, 0.5).
    """
    if not 0.0 < alpha < 0.5:
        raise MeshcheckError(f"alpha={alpha!r} must be in (0, 0.5), such as 0.001")
    retry = np.concatenate([np.full(len(g), n, dtype=int) for n, g in sorted(gaps_ms.items())] or [np.zeros(0, int)])
    gaps = np.concatenate([np.asarray(g, dtype=float) for _, g in sorted(gaps_ms.items())] or [np.zeros(0)])
    if len(gaps) == 0:
        raise MeshcheckError("no back-off gaps to test: no request was retried")
    low, high = pit_bounds(model, retry, gaps, tolerance_ms)
    d = float(bounded_ks_statistic(low, high))
    c = ks_critical(len(gaps), alpha)
    p = float(kstwo.sf(d, len(gaps)))
    return FitResult(model, len(gaps), d, c, p, alpha, tolerance_ms, d <= c)


@dataclass(frozen=True)
class BackoffPlan:
    """How many retried requests the back-off test needs, and what it can detect with them.

    Attributes:
        requests: Requests to send; each makes ``retries`` retries, so ``requests x retries`` waits.
        retries: Retries per request.
        alpha: False-fail rate of the test.
        beta: Planned miss rate.
        power: Power against each rival model at ``requests`` (exact for the fixed waits, simulated else).
        detects: One sentence for the check's record.
    """

    requests: int
    retries: int
    alpha: float
    beta: float
    power: Mapping[str, float]
    detects: str


def power_against(
    null: BackoffModel,
    truth: BackoffModel,
    requests: int,
    *,
    alpha: float,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    simulations: int = POWER_SIMULATIONS,
    seed: int = 13,
) -> float:
    """Chance that the test of ``null`` rejects when waits follow ``truth``, with ``requests`` requests.

    The simulated gaps carry no processing noise: for a truth with longer waits than the null that is the
    least favourable case (noise only lengthens gaps). Deterministic truths need one run.
    """
    retries = len(null.caps_ms)
    rng = np.random.default_rng(seed)
    runs = 1 if truth.kind == "readme-fixed" else simulations
    retry = np.tile(np.arange(1, retries + 1), requests)
    c = ks_critical(requests * retries, alpha)
    gaps = truth.sample(retries, requests * runs, rng).reshape(runs, requests * retries)
    low, high = pit_bounds(null, np.broadcast_to(retry, gaps.shape), gaps, tolerance_ms)
    return float(np.mean(bounded_ks_statistic(low, high) > c))


# Deterministic (seeded simulations) and about a second of CPU: both back-off scenarios of a run share one plan.
@lru_cache(maxsize=64)
def plan_backoff(
    retries: int,
    *,
    alpha: float,
    beta: float,
    base: float = DEFAULT_BACKOFF_BASE,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    max_requests: int = 2000,
) -> BackoffPlan:
    """The fewest requests for which the test of Envoy's rule rejects both rivals with probability ``1 - beta``.

    The README's fixed waits are rejected with certainty by a handful of waits; the ``(2^n - 1)`` rule, which
    agrees with Envoy's before retry 1, needs more. A simulated power counts when its 99 % lower confidence
    bound (Clopper-Pearson over the simulations) reaches ``1 - beta``, so Monte Carlo noise cannot pass a
    sample that is too small.

    Raises:
        MeshcheckError: ``retries < 2`` (the rivals agree with Envoy on retry 1 only in distribution shape, and
            the docs rule is identical there), or no sample up to ``max_requests`` reaches the power.
    """
    if retries < 2:
        raise MeshcheckError(f"retries={retries}: the back-off rules differ from retry 2 on; use attempts >= 2")
    null = envoy_model(retries, base)
    rivals = (readme_fixed_model(retries, base), docs_model(retries, base))

    def enough(requests: int) -> dict[str, float] | None:
        powers: dict[str, float] = {}
        for rival in rivals:
            p = power_against(null, rival, requests, alpha=alpha, tolerance_ms=tolerance_ms)
            runs = 1 if rival.kind == "readme-fixed" else POWER_SIMULATIONS
            lower = p if runs == 1 else float(beta_dist.ppf(0.01, p * runs, runs - p * runs + 1)) if p > 0 else 0.0
            if lower < 1 - beta:
                return None
            powers[rival.name] = p
        return powers

    # Power grows with the sample: double until it is enough, then bisect (small arrays, no 2000-request runs).
    high = 2
    while enough(high) is None:
        if high >= max_requests:
            raise MeshcheckError(f"no sample up to {max_requests} requests detects the rival back-off rules")
        high = min(2 * high, max_requests)
    low = high // 2 + 1
    while low < high:
        mid = (low + high) // 2
        if enough(mid) is None:
            low = mid + 1
        else:
            high = mid
    powers = enough(low) or {}
    detects = f"with {low} requests ({low * retries} waits) the test at alpha {alpha:g} rejects " + "; ".join(
        f"{name} with probability {p:.3f}" for name, p in powers.items()
    )
    return BackoffPlan(low, retries, alpha, beta, powers, detects)
