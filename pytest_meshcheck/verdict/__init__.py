"""Statistical verdicts: does an observed rate agree with the expected one?

Fixed-sample checks with Wilson or Clopper-Pearson intervals (default confidence 0.99), the sample size
to plan up front, and an optional Wald SPRT that may stop early. Each check runs once; a failed check is
never rerun until it passes.
"""

from __future__ import annotations

from pytest_meshcheck.verdict.binomial import (
    DEFAULT_CONFIDENCE,
    check_proportion,
    clopper_pearson_interval,
    half_width_at,
    one_sided_bound,
    proportion_interval,
    sample_size,
    wilson_interval,
)
from pytest_meshcheck.verdict.sequential import SequentialTest
from pytest_meshcheck.verdict.verdict import Interval, Verdict

__all__ = [
    "DEFAULT_CONFIDENCE",
    "Interval",
    "SequentialTest",
    "Verdict",
    "check_proportion",
    "clopper_pearson_interval",
    "half_width_at",
    "one_sided_bound",
    "proportion_interval",
    "sample_size",
    "wilson_interval",
]
