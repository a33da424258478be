"""Each corrected scenario of ``scenarios/test_readme_claims.py`` fails its intended claim under a weaker policy.

The same pattern as ``test_weakened_policies.py``: the scenario's built-in policy is replaced through the
substitution ``--mesh-policies`` performs, and :class:`ScenarioFailed` must name the intended check, a
claim about the mesh (role ``claim``), never a model-only check.

* second ejection lasts 2 x base (2-2.5 s): baseEjectionTime 1 s -> 1.5 s makes it 3-3.5 s. A shorter base
  (0.5 s) is no use as a weakening: Envoy's 1 s update_merge_window then holds back each return to the load
  balancer until a full second after the previous change, which stretches a 1-1.5 s re-ejection into the
  claimed range;
* one instance never ejected at maxEjectionPercent 50: 50 -> 100 lets Envoy eject it;
* one instance ejected after 3 failures at maxEjectionPercent 100: consecutive5xxErrors 3 -> 4;
* ejected, failing replicas get 2/3 of the requests in panic (minHealthPercent 50): minHealthPercent 50 -> 0
  turns panic mode off, so they get none;
* ejected replicas get nothing with minHealthPercent left out (Istio's 0): 0 -> 50 sends them 2/3 again;
* waits uniform in [0, 25 / 50 / 100 ms): ``retries.backoff: 50ms`` (honoured from Istio 1.26) doubles every cap,
  which the back-off test, sized for the (2^n - 1) x 25 ms rule's smaller deviation, rejects;
* slow replica's share at most 20 % under the default (LEAST_REQUEST) or LEAST_CONN: ROUND_ROBIN gives it a third;
* slow replica's share a third under ROUND_ROBIN: LEAST_REQUEST gives it about 14 %.

The strict-xfail "as written" scenarios are not listed: they already fail on their claim by design.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_meshcheck.harness.scenario import Scenario, ScenarioFailed
from pytest_meshcheck.policy import PolicySet, load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scenarios"))
import test_readme_claims as rc


def text(yaml_text: str) -> PolicySet:
    return load_policy_text(yaml_text, source="<weakened>")


Case = tuple[str, Callable[[Scenario], None], PolicySet, str]
CASES: list[Case] = [
    ("re-ejection baseEjectionTime 1 s -> 1.5 s", rc.test_still_failing_replica_is_ejected_again_for_twice_as_long,
     text(rc.half_open_policy(base="1.5s")), "claim: second ejection of the still-failing replica (s)"),
    ("one instance maxEjectionPercent 50 -> 100", rc.test_one_instance_is_never_ejected_at_max_ejection_percent_50,
     text(rc.one_host_policy(100)), "claim: requests that reached the only instance (all: it is never ejected)"),
    ("one instance consecutive5xxErrors 3 -> 4", rc.test_one_instance_is_ejected_at_max_ejection_percent_100,
     text(rc.one_host_policy(100, consecutive=4)),
     "claim: failures the only instance served before its ejection (then nothing)"),
    ("minHealthPercent 50 -> 0", rc.test_min_health_percent_50_is_a_panic_threshold, text(rc.min_health_policy(0)),
     "claim: share of requests the failing, ejected instances served (panic: 2 of 3 hosts)"),
    ("minHealthPercent 0 -> 50", rc.test_min_health_percent_0_keeps_ejected_hosts_out, text(rc.min_health_policy(50)),
     "claim: share of requests the failing, ejected instances served (none)"),
    ("back-off base 25 ms -> 50 ms", rc.test_retries_wait_jittered_exponential_backoff,
     text(rc.backoff_policy(backoff="50ms")), "claim: waits before retries 1-3 are uniform in [0, 25 / 50 / 100 ms)"),
    ("default load balancer -> ROUND_ROBIN", rc.test_default_load_balancing_sends_a_slow_replica_less,
     text(rc.lb_policy("ROUND_ROBIN")), "claim: slow replica's share at most 20%"),
    ("ROUND_ROBIN -> LEAST_REQUEST", rc.test_round_robin_sends_a_slow_replica_a_third,
     text(rc.lb_policy("LEAST_REQUEST")), "claim: slow replica's share is a third"),
    ("LEAST_CONN -> ROUND_ROBIN", rc.test_least_conn_is_accepted_as_least_request_with_a_warning,
     text(rc.lb_policy("ROUND_ROBIN")), "claim: slow replica's share at most 20%"),
]  # fmt: skip


@pytest.mark.prometheus
@pytest.mark.parametrize(("weakening", "scenario_fn", "weak", "intended"), CASES, ids=[c[0] for c in CASES])
def test_readme_claim_fails_when_its_policy_is_weakened(
    fails_on_claim: Callable[..., ScenarioFailed],
    weakening: str,
    scenario_fn: Callable[[Scenario], None],
    weak: PolicySet,
    intended: str,
) -> None:
    failure = fails_on_claim(weak, scenario_fn, intended, weakening)
    # The message a user acts on: the failed check, the policy lines, and where the report is.
    assert "policy lines and defaults involved" in str(failure)
