"""The option default, the settings default and the planner's default are the run budget's per-check share."""

from __future__ import annotations

from pytest_meshcheck.error_budget import CHECK_ALPHA, RATE_CHECKS_PER_RUN, RUN_ALPHA
from pytest_meshcheck.settings import OPTIONS, MeshSettings
from pytest_meshcheck.verdict.power import DEFAULT_ALPHA


def test_every_default_alpha_is_the_run_budget_over_its_checks() -> None:
    assert CHECK_ALPHA == RUN_ALPHA / RATE_CHECKS_PER_RUN
    option = next(o for o in OPTIONS if o.name == "alpha")
    assert float(option.default) == MeshSettings().alpha == DEFAULT_ALPHA == CHECK_ALPHA
