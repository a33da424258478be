"""Call-chain model: success, calls per service, latency ceiling and duplicate calls, hand-computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect import DestinationFault
from pytest_meshcheck.expect.chain import NON_IDEMPOTENT_METHODS, ChainPrediction, predict_chain
from pytest_meshcheck.policy.loader import load_policies, load_policy_text
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import Topology, load_topology

RT = "retry-timeout.yaml"


@pytest.fixture(scope="module")
def topo() -> Topology:
    return load_topology()


@pytest.fixture(scope="module")
def platform() -> PolicySet:
    return load_policies(platform_policies_dir())


def vs(host: str, retries: str, timeout: str | None = None) -> str:
    tail = f"\n    timeout: {timeout}" if timeout else ""
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: {host}, namespace: platform-core}}\n"
        f"spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}}}\n"
        f"    retries: {retries}{tail}\n"
    )


def chain(topo: Topology, policies: PolicySet, **faults: list[DestinationFault]) -> ChainPrediction:
    return predict_chain(topo, policies, "1.30", "order-service", {k.replace("_", "-"): v for k, v in faults.items()})


def locations(pred: object) -> set[str]:
    return {r.location.rsplit("/", 1)[-1] for r in pred.reasons if r.location}  # type: ignore[attr-defined]


def test_worst_case_is_four_tries_times_four_tries(topo: Topology, platform: PolicySet) -> None:
    pred = chain(topo, platform)
    # attempts: 3 is 3 retries, 4 tries, at both hops (istiod: num_retries = attempts)
    assert pred.hop("order-service").tries == 4
    assert pred.hop("payment-service").tries == 4
    assert pred.calls["order-service"].worst == 4
    assert pred.calls["payment-service"].worst == 16
    assert pred.calls["inventory-service"].worst == 16
    assert pred.calls["payment-service"].expected == pytest.approx(1.0)
    assert {f"{RT}:21", f"{RT}:57", "topology.yaml:17"} <= locations(pred.calls["payment-service"])


def test_success_composes_hop_by_hop(topo: Topology, platform: PolicySet) -> None:
    pred = chain(topo, platform, payment_service=[DestinationFault("error", 0.5, status=503)])
    inner = 1 - 0.5**4  # payment's sidecar: 4 tries
    outer = 1 - (1 - inner) ** 4  # order answers payment's 503, and the client's sidecar retries it 4 times
    assert pred.hop("payment-service").success.p_success == pytest.approx(inner)
    assert pred.p_success == pytest.approx(outer)
    # order presents payment's failures as a 503 at the rate payment's hop lets through
    (derived,) = pred.hop("order-service").faults
    assert (derived.kind, derived.status, derived.rate) == ("error", 503, pytest.approx(0.5**4))
    mean_payment = (1 + 0.5 + 0.25 + 0.125) * sum((0.5**4) ** k for k in range(4))
    assert pred.calls["payment-service"].expected == pytest.approx(mean_payment)
    assert {f"{RT}:23", f"{RT}:59", "topology.yaml:17"} <= locations(pred)


def test_independent_faults_at_two_leaves_multiply(topo: Topology, platform: PolicySet) -> None:
    pred = chain(
        topo,
        platform,
        payment_service=[DestinationFault("error", 0.5, status=503)],
        inventory_service=[DestinationFault("error", 0.5, status=500)],
    )
    leaf = 1 - 0.5**4
    order_attempt_fails = 1 - leaf * leaf  # payment first, then inventory, each after its own 4 tries
    assert pred.p_success == pytest.approx(1 - order_attempt_fails**4)
    statuses = {f.status: f.rate for f in pred.hop("order-service").faults}
    assert statuses[503] == pytest.approx(0.5**4)
    assert statuses[500] == pytest.approx(0.5**4)  # conditional rate: inventory is called only when payment succeeded


def test_on_error_ignore_hides_the_failure(topo: Topology, platform: PolicySet, tmp_path: Path) -> None:
    text = load_topology().source
    t = tmp_path / "topo.yaml"
    t.write_text(Path(text).read_text().replace("path: /check}", "path: /check, on_error: ignore}"))
    pred = predict_chain(
        load_topology(t), platform, "1.30", "order-service", {"inventory-service": [DestinationFault("error", 1.0)]}
    )
    assert pred.p_success == pytest.approx(1.0)
    assert pred.hop("inventory-service").success.p_success == pytest.approx(0.0)


def test_latency_ceiling_and_wasted_work(topo: Topology, platform: PolicySet) -> None:
    pred = chain(topo, platform)
    # order: 4 tries x 2 s per try + back-off at most 25 + 50 + 100 ms, under the 10 s route timeout
    assert pred.ceiling == pytest.approx(8.175)
    assert "perTryTimeout 2s" in pred.binding
    wasted = {w.callee: w for w in pred.wasted}
    assert wasted["payment-service"].excess == pytest.approx(15 - 2)  # payment's 15 s route timeout binds
    assert wasted["inventory-service"].excess == pytest.approx(8 - 2)
    assert wasted["payment-service"].retried
    assert {f"{RT}:22", f"{RT}:60"} <= locations(wasted["payment-service"])


def test_route_timeout_binds_when_inner_work_is_unbounded(topo: Topology) -> None:
    pols = load_policy_text(vs("order-service", "{attempts: 1, retryOn: 5xx}", "3s"))
    pred = chain(topo, pols)
    assert pred.ceiling == 3.0
    assert "route timeout 3s" in pred.binding
    assert {w.callee: w.excess for w in pred.wasted} == {"payment-service": None, "inventory-service": None}


def test_slow_payment_is_charged_twice_when_order_retries_it(topo: Topology, platform: PolicySet) -> None:
    q = 0.2
    slow = [DestinationFault("latency", q, delay=3.0)]  # under payment's 5 s per try, over order's 2 s
    dup = chain(topo, platform, payment_service=slow).duplicate("payment-service")
    assert "POST" in NON_IDEMPOTENT_METHODS
    assert not dup.idempotent
    assert dup.p_inner == pytest.approx(0.0)  # payment's sidecar never times the 3 s call out
    assert dup.p_twice == pytest.approx(q)  # order's 2 s per try cuts it and the client's sidecar re-runs order
    assert {f"{RT}:22", f"{RT}:23", "topology.yaml:17"} <= locations(dup)
    # 6 s: payment's own 5 s per try also fires; both retries come from the same slow first attempt
    both = chain(topo, platform, payment_service=[DestinationFault("latency", q, delay=6.0)]).duplicate(
        "payment-service"
    )
    assert (both.p_inner, both.p_twice) == (pytest.approx(q), pytest.approx(q))


def test_corrected_policies_never_deliver_payment_twice(topo: Topology) -> None:
    slow = {"payment-service": [DestinationFault("latency", 0.2, delay=6.0)]}
    # no per-try timeout retries at the edge, no retries on payment
    edge = vs("order-service", "{attempts: 3, perTryTimeout: 2s, retryOn: 'connect-failure,refused-stream'}", "10s")
    for payment in ("{attempts: 0}", "{attempts: 2, perTryTimeout: 5s, retryOn: 'connect-failure,refused-stream'}"):
        pols = load_policy_text(edge + "---\n" + vs("payment-service", payment, "15s"))
        dup = predict_chain(topo, pols, "1.30", "order-service", slow).duplicate("payment-service")
        assert dup.p_twice == 0.0


def test_errors_at_payment_are_redelivered_by_payments_own_retries(topo: Topology, platform: PolicySet) -> None:
    dup = chain(topo, platform, payment_service=[DestinationFault("error", 0.3, status=503)]).duplicate(
        "payment-service"
    )
    # the first attempt fails (30 %), and order is re-run only when payment failed every try
    assert dup.p_twice == pytest.approx(0.3)


def test_default_istio_retries_do_not_amplify(topo: Topology) -> None:
    pred = chain(topo, PolicySet())
    # 1.30's default retries only connection failures: retried attempts never reached the application
    assert pred.calls["payment-service"].worst == 1
    assert pred.hop("payment-service").tries == 3
    old = predict_chain(topo, PolicySet(), "1.23", "order-service")
    assert old.calls["payment-service"].worst == 9  # before 1.24 the default retried 503: 3 x 3


def test_describe_lists_every_hop(topo: Topology, platform: PolicySet) -> None:
    text = str(chain(topo, platform))
    assert "client -> order-service" in text
    assert "order-service -> payment-service POST /pay" in text
    assert "payment-service 1.000 (worst 16)" in text


def test_bad_input_names_the_service(topo: Topology, platform: PolicySet) -> None:
    with pytest.raises(MeshcheckError, match="nope-service"):
        predict_chain(topo, platform, "1.30", "order-service", {"nope-service": [DestinationFault("error")]})
    with pytest.raises(MeshcheckError, match="list of DestinationFault"):
        predict_chain(topo, platform, "1.30", "order-service", {"payment-service": DestinationFault("error")})  # type: ignore[dict-item]
