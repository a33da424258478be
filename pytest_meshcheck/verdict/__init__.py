"""Statistical verdicts: does an observed rate hold a claim, and what could the check have detected?

Rate claims are decided by exact binomial rules planned for two error rates (:mod:`.power`): the
false-fail rate alpha and the miss rate beta at the claim's delta. An optional Wald SPRT (:mod:`.sequential`)
may stop early; a sample whose size a sequential test chose is judged with a confidence sequence
(:mod:`.anytime`). Each check runs once; a failed check is never rerun until it passes.
"""

from __future__ import annotations

from pytest_meshcheck.verdict.anytime import confidence_sequence
from pytest_meshcheck.verdict.binomial import (
    DEFAULT_CONFIDENCE,
    clopper_pearson_interval,
    one_sided_bound,
    proportion_interval,
    wilson_interval,
)
from pytest_meshcheck.verdict.power import RateDecision, RatePlan, RateRule, acceptance_region, decide, detectable
from pytest_meshcheck.verdict.sequential import SequentialTest
from pytest_meshcheck.verdict.verdict import Interval, Verdict

__all__ = [
    "DEFAULT_CONFIDENCE",
    "Interval",
    "RateDecision",
    "RatePlan",
    "RateRule",
    "SequentialTest",
    "Verdict",
    "acceptance_region",
    "clopper_pearson_interval",
    "confidence_sequence",
    "decide",
    "detectable",
    "one_sided_bound",
    "proportion_interval",
    "wilson_interval",
]
