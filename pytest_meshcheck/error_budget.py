"""A run's false-fail budget and each rate check's share of it.

Its own module, without imports, so that the option defaults and the terminal summary read the same numbers
as the planner without loading scipy.
"""

from __future__ import annotations

#: The false-fail rate a whole run is designed for: at most 1 run in 1,000 whose policies all hold fails.
RUN_ALPHA = 0.001
#: The rate checks a run is planned for; a run of 54 scenarios makes about 43 (claims, model checks and
#: proofs that a fault hit at its rate).
RATE_CHECKS_PER_RUN = 50
#: Each rate check's false-fail rate, by Bonferroni: a run's is at most the sum of its checks' rates.
CHECK_ALPHA = RUN_ALPHA / RATE_CHECKS_PER_RUN
