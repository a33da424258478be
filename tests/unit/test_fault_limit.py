"""A count-limited error fault is validated where it is stated (the echo's own checks: test_echo_parsing)."""

from __future__ import annotations

import pytest

from pytest_meshcheck.chaos.destination import error_spec
from pytest_meshcheck.errors import ChaosError


def test_error_spec_carries_the_limit_only_when_given() -> None:
    assert error_spec(1.0, 500) == {"status": 500, "probability": 1.0}
    assert error_spec(1.0, 500, 3) == {"status": 500, "probability": 1.0, "limit": 3}


@pytest.mark.parametrize("limit", [0, -1, True, 2.5])
def test_error_spec_rejects_a_limit_that_is_not_a_count(limit: object) -> None:
    with pytest.raises(ChaosError, match="error limit"):
        error_spec(1.0, 500, limit)  # type: ignore[arg-type]
