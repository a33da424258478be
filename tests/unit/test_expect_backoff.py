"""The back-off model and its goodness-of-fit test (pytest_meshcheck/expect/backoff.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.backoff import (
    DEFAULT_TOLERANCE_MS,
    RESOLUTION_MS,
    bounded_ks_statistic,
    docs_model,
    envoy_model,
    fit,
    pit_bounds,
    plan_backoff,
    power_against,
    readme_fixed_model,
)


def measured(waits: np.ndarray, rng: np.random.Generator, noise_ms: float) -> np.ndarray:
    """What the logs show: the wait, Envoy's processing (up to ``noise_ms``) and the truncated duration's rest."""
    return waits + rng.uniform(0, noise_ms, waits.shape) + rng.uniform(0, RESOLUTION_MS, waits.shape)


def by_retry(gaps: np.ndarray) -> dict[int, list[float]]:
    return {n + 1: list(gaps[:, n]) for n in range(gaps.shape[1])}


def test_models_caps() -> None:
    assert envoy_model(5).caps_ms == (25, 50, 100, 200, 250)
    assert envoy_model(2, base=0.1).caps_ms == (100, 200)
    assert readme_fixed_model(3).caps_ms == (25, 50, 100)
    assert docs_model(5).caps_ms == (25, 75, 175, 250, 250)


def test_envoy_cdf_is_uniform_on_whole_milliseconds() -> None:
    m = envoy_model(3)
    retry = np.array([1, 1, 1, 2, 3, 3])
    x = np.array([0.0, 0.5, 24.0, 24.9, -1.0, 150.0])
    assert list(m.cdf(retry, x)) == pytest.approx([1 / 25, 1 / 25, 1.0, 25 / 50, 0.0, 1.0])
    assert list(m.cdf(retry, x, strict=True)) == pytest.approx([0.0, 1 / 25, 24 / 25, 25 / 50, 0.0, 1.0])


def test_pit_bounds_contain_the_true_transform() -> None:
    rng = np.random.default_rng(1)
    m = envoy_model(3)
    waits = m.sample(3, 500, rng)
    gaps = measured(waits, rng, DEFAULT_TOLERANCE_MS)
    retry = np.tile([1, 2, 3], (500, 1))
    low, high = pit_bounds(m, retry, gaps, DEFAULT_TOLERANCE_MS)
    assert np.all(low <= m.cdf(retry, waits, strict=True) + 1e-12)
    assert np.all(m.cdf(retry, waits) <= high + 1e-12)


def test_bounded_statistic_never_exceeds_the_ks_statistic_of_a_value_inside() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        u = rng.random(40)
        low, high = u - rng.random(40) * 0.1, u + rng.random(40) * 0.1
        assert float(bounded_ks_statistic(low, high)) <= kstest(u, "uniform").statistic + 1e-12
    # With no slack it is the KS statistic itself.
    u = rng.random(40)
    assert float(bounded_ks_statistic(u, u)) == pytest.approx(kstest(u, "uniform").statistic)


def test_envoy_waits_fit_envoy_and_fail_both_rivals() -> None:
    rng = np.random.default_rng(3)
    gaps = by_retry(measured(envoy_model(3).sample(3, 100, rng), rng, 1.5))
    assert fit(envoy_model(3), gaps, alpha=0.001).passed
    assert not fit(readme_fixed_model(3), gaps, alpha=0.001).passed
    assert not fit(docs_model(3), gaps, alpha=0.001).passed


def test_fixed_and_docs_waits_fail_envoys_model() -> None:
    rng = np.random.default_rng(4)
    fixed = by_retry(measured(readme_fixed_model(3).sample(3, 43, rng), rng, 1.0))
    docs = by_retry(measured(docs_model(3).sample(3, 100, rng), rng, 1.0))
    assert not fit(envoy_model(3), fixed, alpha=0.001).passed
    assert not fit(envoy_model(3), docs, alpha=0.001).passed


def test_false_fail_rate_stays_at_alpha_with_processing_noise_up_to_the_tolerance() -> None:
    rng = np.random.default_rng(5)
    m = envoy_model(3)
    runs, alpha = 2000, 0.05
    fails = sum(
        not fit(m, by_retry(measured(m.sample(3, 43, rng), rng, DEFAULT_TOLERANCE_MS)), alpha=alpha).passed
        for _ in range(runs)
    )
    assert fails / runs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


def test_plan_is_the_smallest_sample_with_the_power() -> None:
    plan = plan_backoff(3, alpha=0.001, beta=0.05)
    assert plan.power[readme_fixed_model(3).name] == 1.0
    assert plan.power[docs_model(3).name] >= 0.95
    assert power_against(envoy_model(3), docs_model(3), plan.requests - 5, alpha=0.001) < 0.95
    assert f"{plan.requests} requests" in plan.detects
    # A stricter run needs more requests.
    assert plan_backoff(3, alpha=0.0001, beta=0.01).requests > plan.requests


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(MeshcheckError, match="attempts >= 2"):
        plan_backoff(1, alpha=0.001, beta=0.05)
    with pytest.raises(MeshcheckError, match="no request was retried"):
        fit(envoy_model(3), {}, alpha=0.001)
    with pytest.raises(MeshcheckError, match="alpha"):
        fit(envoy_model(3), {1: [1.0]}, alpha=0.7)
