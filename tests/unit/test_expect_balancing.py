"""Load-balancer shares with one slow instance (pytest_meshcheck/expect/balancing.py)."""

from __future__ import annotations

import pytest

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.balancing import predict_balance

SLOW = [0.2, 0.02, 0.02]


def test_round_robin_and_random_give_each_instance_a_third() -> None:
    assert predict_balance("ROUND_ROBIN", SLOW, 6).shares == pytest.approx([1 / 3] * 3, abs=1e-3)
    assert predict_balance("RANDOM", SLOW, 6).shares == pytest.approx([1 / 3] * 3, abs=0.01)


def test_least_request_starves_the_slow_instance_more_as_concurrency_grows() -> None:
    shares = [predict_balance("LEAST_REQUEST", SLOW, c).shares[0] for c in (3, 6, 12)]
    assert 1 / 9 < shares[2] < shares[1] < shares[0] < 1 / 3  # never below both draws landing on it
    assert shares[1] == pytest.approx(0.138, abs=0.01)
    # Equal instances share evenly under every policy.
    assert predict_balance("LEAST_REQUEST", [0.02] * 3, 6).shares == pytest.approx([1 / 3] * 3, abs=0.01)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(MeshcheckError, match="RING_HASH"):
        predict_balance("RING_HASH", SLOW, 6)
    with pytest.raises(MeshcheckError, match="positive"):
        predict_balance("LEAST_REQUEST", [0.0, 0.1], 6)
    with pytest.raises(MeshcheckError, match="concurrency"):
        predict_balance("LEAST_REQUEST", SLOW, 0)
