"""Deciding convergence from the proxy's own config, and waiting without blind sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_meshcheck.errors import MeshTimeoutError
from pytest_meshcheck.kube.callers import caller_pods
from pytest_meshcheck.kube.converge import (
    ObjectKey,
    Proxy,
    SidecarView,
    endpoints_pending,
    pending,
    proxy_pending,
    reaches_caller,
)
from pytest_meshcheck.kube.rewrite import rewrite_topology
from pytest_meshcheck.kube.wait import wait_until
from pytest_meshcheck.topology import parse_topology

NS = "meshcheck-c1"
TOPOLOGY = rewrite_topology(
    parse_topology(
        {
            "namespace": "shop",
            "services": [{"name": "orders", "port": 8084, "versions": [{"name": "v1", "replicas": 2}]}],
        }
    ),
    NS,
)
CALLER = {"app": "meshcheck-agent", "version": "v1"}


def _vs(**spec: Any) -> dict[str, Any]:
    return {"kind": "VirtualService", "metadata": {"namespace": NS, "name": "v-g1"}, "spec": spec}


def _dr(**spec: Any) -> dict[str, Any]:
    return {"kind": "DestinationRule", "metadata": {"namespace": NS, "name": "d-g1"}, "spec": spec}


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (_vs(hosts=["orders"], http=[{"route": []}]), True),
        (_vs(hosts=[f"orders.{NS}.svc.cluster.local"], gateways=["mesh", "gw"], http=[{}]), True),
        (_vs(hosts=["orders"], gateways=[f"{NS}/gw"], http=[{}]), False),  # gateway only
        (_vs(hosts=["orders"], tcp=[{}]), False),  # no HTTP routes, so no route metadata
        (_vs(hosts=["example.com"], http=[{}]), False),  # not a topology host
        (_vs(hosts=["orders"], http=[{}], exportTo=["other"]), False),
        (_vs(hosts=[f"*.{NS}.svc.cluster.local"], http=[{}]), True),
        (_dr(host="orders"), True),
        (_dr(host="orders", workloadSelector={"matchLabels": {"app": "meshcheck-agent"}}), True),
        (_dr(host="orders", workloadSelector={"matchLabels": {"app": "orders"}}), False),
        (_dr(host="payments"), False),
    ],
)
def test_which_policies_reach_the_caller(manifest: dict[str, Any], expected: bool) -> None:
    assert reaches_caller(manifest, TOPOLOGY, CALLER) is expected


def test_pending_lists_missing_and_stale_objects() -> None:
    view = SidecarView.from_json(
        {
            "configs": {
                f"/apis/networking.istio.io/v1/namespaces/{NS}/virtual-service/v-g2": ["route 8084/vh/r0"],
                f"/apis/networking.istio.io/v1alpha3/namespaces/{NS}/destination-rule/d-g1": ["cluster c"],
            },
            "clusters": {},
        }
    )
    new_vs, old_vs = ObjectKey("VirtualService", NS, "v-g2"), ObjectKey("VirtualService", NS, "v-g1")
    new_dr, old_dr = ObjectKey("DestinationRule", NS, "d-g2"), ObjectKey("DestinationRule", NS, "d-g1")
    assert pending(view, [new_vs], [old_vs]) == []
    assert pending(view, [new_vs, new_dr], [old_vs, old_dr]) == [
        f"DestinationRule {NS}/d-g2 not yet in the caller's sidecar",
        f"DestinationRule {NS}/d-g1 still in the caller's sidecar after its deletion",
    ]
    # A name that only shares a prefix is not the object.
    assert not view.runs(ObjectKey("VirtualService", NS, "v-g"))


def test_endpoints_pending_until_every_replica_is_healthy() -> None:
    cluster = f"outbound|8084||orders.{NS}.svc.cluster.local"
    assert endpoints_pending(SidecarView(clusters={cluster: (2, 2)}), TOPOLOGY) == []
    assert endpoints_pending(SidecarView(clusters={cluster: (2, 1)}), TOPOLOGY) == [
        f"{cluster}: 1 healthy of 2 endpoints, want 2"
    ]
    assert endpoints_pending(SidecarView(), TOPOLOGY) == [f"{cluster}: 0 healthy of 0 endpoints, want 2"]


def _config(kind: str, name: str) -> str:
    return f"/apis/networking.istio.io/v1/namespaces/{NS}/{kind}/{name}"


def test_each_proxy_is_held_to_the_policies_istiod_gives_it_and_named() -> None:
    selected = _dr(host="orders", workloadSelector={"matchLabels": {"app": "orders"}})
    reads: list[str] = []

    def proxy(where: str, labels: dict[str, str], configs: dict[str, list[str]]) -> Proxy:
        def view() -> SidecarView:
            reads.append(where)
            return SidecarView(configs=configs)

        return Proxy(where, labels, view)

    agent = proxy("the caller's sidecar", CALLER, {})
    order_pod = proxy("the sidecar of pod orders-v1-a", {"app": "orders", "version": "v1"}, {})
    # The DestinationRule selects the order pods only: the agent is not asked for it, nor even read.
    assert proxy_pending(agent, TOPOLOGY, [selected], []) == []
    assert reads == []
    assert proxy_pending(order_pod, TOPOLOGY, [selected], []) == [
        f"DestinationRule {NS}/d-g1 not yet in the sidecar of pod orders-v1-a"
    ]
    done = proxy("the sidecar of pod orders-v1-b", {"app": "orders"}, {_config("destination-rule", "d-g1"): ["c"]})
    assert proxy_pending(done, TOPOLOGY, [selected], []) == []
    assert proxy_pending(done, TOPOLOGY, [], [selected]) == [
        f"DestinationRule {NS}/d-g1 still in the sidecar of pod orders-v1-b after its deletion"
    ]


def test_endpoints_pending_only_for_the_services_a_proxy_sends_to() -> None:
    topology = rewrite_topology(
        parse_topology(
            {
                "namespace": "shop",
                "services": [
                    {"name": "orders", "port": 8084, "calls": [{"service": "payments"}]},
                    {"name": "payments", "port": 8080, "versions": [{"name": "v1", "replicas": 2}]},
                ],
            }
        ),
        NS,
    )
    payments = f"outbound|8080||payments.{NS}.svc.cluster.local"
    view = SidecarView(clusters={payments: (2, 2)})
    assert endpoints_pending(view, topology, ("payments",)) == []
    assert endpoints_pending(view, topology) == [
        f"outbound|8084||orders.{NS}.svc.cluster.local: 0 healthy of 0 endpoints, want 1"
    ]

    def pod(name: str, app: str, phase: str = "Running", **meta: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {"app": app}, **meta}, "status": {"phase": phase}}

    pods = [
        pod("orders-v1-b", "orders"),
        pod("payments-v1-a", "payments"),
        pod("orders-v1-a", "orders"),
        pod("orders-v1-c", "orders", phase="Pending"),
        pod("orders-v1-d", "orders", deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    assert caller_pods(topology, pods) == [
        ("orders-v1-a", {"app": "orders"}, ("payments",)),
        ("orders-v1-b", {"app": "orders"}, ("payments",)),
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_until_polls_at_the_interval_and_returns_the_time_taken() -> None:
    clock = FakeClock()
    answers = iter([(False, "a"), (False, "b"), (True, "c")])
    took = wait_until(lambda: next(answers), timeout=10, description="x", interval=0.5, clock=clock, sleep=clock.sleep)
    assert took == 1.0
    assert clock.sleeps == [0.5, 0.5]


def test_wait_until_times_out_with_the_last_observation_and_the_fix() -> None:
    clock = FakeClock()
    with pytest.raises(MeshTimeoutError) as info:
        wait_until(
            lambda: (False, f"seen at {clock.now:g}"),
            timeout=2,
            description="the thing",
            interval=0.75,
            fix="Do this",
            clock=clock,
            sleep=clock.sleep,
        )
    assert str(info.value) == "timed out after 2s waiting for the thing; last observed: seen at 2. Do this"
    assert isinstance(info.value, TimeoutError)
    assert clock.sleeps == [0.75, 0.75, 0.5]
