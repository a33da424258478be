"""Live policy changes on a running LocalMesh: apply, replace and remove under load, converged on return.

Evidence comes from Envoy itself: after each call returns, ``/config_dump`` must already show the new
retry policy and connection-pool limit; the load generator must see only 200s; and the access log must
show that no request needed a retry, so no disruption was hidden by the retry policies being swapped.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_meshcheck.errors import MeshSetupError, PolicyError
from pytest_meshcheck.load import LoadResult, OpenLoop, run_load
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.policy import PolicySet, load_policy_text

pytestmark = pytest.mark.envoy

FQDN = "order-service.platform-core.svc.cluster.local"
VHOST = f"{FQDN}:8084"
DEFAULT_CLUSTER = f"outbound|8084||{FQDN}"
ISTIO_DEFAULT_RETRIES = 2  # the retry policy istiod gives a route without `retries`
UNLIMITED = 4294967295  # istiod's connection-pool limits when no DestinationRule sets them


def virtual_service(attempts: int, *, subsets: bool, regex: str | None = None) -> str:
    if subsets:
        route = f"""
    - destination: {{host: {FQDN}, subset: v1}}
      weight: 75
    - destination: {{host: {FQDN}, subset: v2}}
      weight: 25"""
    else:
        route = f"""
    - destination: {{host: {FQDN}}}"""
    match = (
        f"""
  - match:
    - uri: {{regex: "{regex}"}}
    route:{route}
    retries: {{attempts: {attempts}, perTryTimeout: 2s, retryOn: "5xx,reset"}}"""
        if regex
        else ""
    )
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: order-service-retry, namespace: platform-core}}
spec:
  hosts: [{FQDN}]
  http:{match}
  - route:{route}
    retries: {{attempts: {attempts}, perTryTimeout: 2s, retryOn: "5xx,reset"}}
    timeout: 10s
"""


def destination_rule(pending: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: order-service-pool, namespace: platform-core}}
spec:
  host: {FQDN}
  trafficPolicy:
    connectionPool: {{http: {{http1MaxPendingRequests: {pending}}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


def policies(*docs: str) -> PolicySet:
    return load_policy_text("---".join(docs))


@dataclasses.dataclass
class Running:
    """What Envoy's /config_dump says it runs for order-service."""

    num_retries: int
    clusters: list[str]
    max_pending: int | None
    subset_clusters: list[str]


def running(mesh: LocalMesh) -> Running:
    assert mesh.admin is not None
    routes = mesh.admin.get("/config_dump", resource="dynamic_route_configs").json()["configs"]
    (vhost,) = [
        vh
        for rc in routes
        if rc["route_config"]["name"] == "meshcheck-outbound"
        for vh in rc["route_config"]["virtual_hosts"]
        if vh["name"] == VHOST
    ]
    action = vhost["routes"][-1]["route"]
    if "weighted_clusters" in action:
        clusters = [c["name"] for c in action["weighted_clusters"]["clusters"]]
    else:
        clusters = [action["cluster"]]
    dump = mesh.admin.get("/config_dump", resource="dynamic_active_clusters").json()["configs"]
    by_name = {c["cluster"]["name"]: c["cluster"] for c in dump}
    thresholds = by_name[DEFAULT_CLUSTER].get("circuit_breakers", {}).get("thresholds", [{}])[0]
    pending = thresholds.get("max_pending_requests")
    return Running(
        num_retries=int(action["retry_policy"]["num_retries"]),
        clusters=clusters,
        max_pending=int(pending) if pending is not None else None,
        subset_clusters=sorted(n for n in by_name if n.startswith("outbound|8084|v")),
    )


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(prometheus=False, seed=11) as m:
        yield m


@pytest.fixture(autouse=True)
def no_policies(mesh: LocalMesh) -> Iterator[None]:
    mesh.replace_all(PolicySet())
    yield
    mesh.replace_all(PolicySet())


def _wait_for_traffic(mesh: LocalMesh, timeout: float = 30.0) -> None:
    assert mesh.admin is not None
    pattern = r"^cluster\.outbound\|8084\|\|.*\.upstream_rq_total$"
    base = sum(mesh.admin.stats(pattern).values())
    deadline = time.monotonic() + timeout
    while sum(mesh.admin.stats(pattern).values()) < base + 20:
        assert time.monotonic() < deadline, "the load never reached order-service"
        time.sleep(0.02)


def test_apply_replace_remove_under_load_drop_no_request_and_converge_on_return(mesh: LocalMesh) -> None:
    profile = OpenLoop(rate=200, duration=5.0, max_requests=1000)
    outcome: dict[str, LoadResult | BaseException] = {}

    def load() -> None:
        try:
            # Each request takes 20 ms at the workload, so about 4 are in flight during every update.
            outcome["result"] = run_load(
                mesh.sidecar_url + "/?delay=20ms", profile, host=mesh.host_header("order-service"), timeout=10.0
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=load)
    thread.start()
    swaps: list[float] = []  # wall time of each change
    convergence: list[float] = []  # seconds each call took to converge
    try:
        _wait_for_traffic(mesh)
        for i in range(20):
            attempts = 1 + i % 5
            step = i % 4
            if step == 0:  # add both (new clusters for the subsets, then routes to them)
                convergence.append(
                    mesh.apply(policies(virtual_service(attempts, subsets=True), destination_rule(100 + i)))
                )
                expect = Running(attempts, [f"outbound|8084|v1|{FQDN}", f"outbound|8084|v2|{FQDN}"], 100 + i,
                                 [f"outbound|8084|v1|{FQDN}", f"outbound|8084|v2|{FQDN}"])  # fmt: skip
            elif step == 1:  # replace the VirtualService only: routes leave the subsets, the DR stays
                convergence.append(mesh.apply(policies(virtual_service(attempts, subsets=False))))
                expect = Running(attempts, [DEFAULT_CLUSTER], 100 + i - 1,
                                 [f"outbound|8084|v1|{FQDN}", f"outbound|8084|v2|{FQDN}"])  # fmt: skip
            elif step == 2:  # replace everything: the DR and its subset clusters go away
                both = policies(virtual_service(attempts, subsets=True), destination_rule(100 + i))
                convergence.append(mesh.replace_all(both))
                convergence.append(mesh.replace_all(policies(virtual_service(attempts, subsets=False))))
                expect = Running(attempts, [DEFAULT_CLUSTER], UNLIMITED, [])
            else:  # remove: back to Istio's defaults
                convergence.append(mesh.remove([("VirtualService", "platform-core", "order-service-retry")]))
                expect = Running(ISTIO_DEFAULT_RETRIES, [DEFAULT_CLUSTER], UNLIMITED, [])
            # Converged on return: Envoy already runs the new policy, no polling.
            assert running(mesh) == expect, f"swap {i}"
            swaps.append(time.time())
            time.sleep(0.05)
    finally:
        thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert isinstance(result, LoadResult)

    # Every change happened while requests were being sent.
    sent = result.records.sent[: result.count]
    first, last = result.started_wall + float(sent.min()), result.started_wall + float(sent.max())
    assert first < swaps[0], (first, swaps)
    assert swaps[-1] < last, (swaps, last)

    assert result.count == profile.planned_requests == 1000
    assert result.error_histogram() == {}
    assert result.status_histogram() == {200: 1000}
    # No request needed a retry either: nothing was dropped and silently retried by the policies.
    time.sleep(0.4)  # the access log is flushed every 250 ms
    entries = [json.loads(line) for line in mesh.access_log_path.read_text().splitlines()]
    ours = [e for e in entries if e["listener"] == "outbound" and e["path"] == "/?delay=20ms"]
    assert len(ours) == 1000
    assert {(e["response_code"], e["response_flags"], e["attempts"]) for e in ours} == {(200, "-", 1)}

    times = sorted(convergence)
    print(f"\n{len(times)} live changes under load: convergence p50 {statistics.median(times) * 1000:.1f} ms, "
          f"max {times[-1] * 1000:.1f} ms")  # fmt: skip


def test_update_envoy_refuses_is_rolled_back_whole(mesh: LocalMesh) -> None:
    mesh.apply(policies(virtual_service(2, subsets=False), destination_rule(111)))
    good = mesh.policies
    before = running(mesh)
    assert before == Running(2, [DEFAULT_CLUSTER], 111, [f"outbound|8084|v1|{FQDN}", f"outbound|8084|v2|{FQDN}"])

    # Valid for Istio's admission, but Envoy refuses the route config (RE2 program too large), after it
    # has already accepted the cluster change written just before it.
    bad = policies(virtual_service(4, subsets=False, regex="/orders/[a-z]{1,200}"), destination_rule(222))
    t0 = time.monotonic()
    with pytest.raises(MeshSetupError, match="refused the new config") as info:
        mesh.apply(bad)
    refused_after = time.monotonic() - t0
    assert "RE2 program size" in str(info.value)
    assert "previous config keeps running" in str(info.value)
    print(f"\nrefusal reported and rolled back in {refused_after * 1000:.0f} ms")
    assert mesh.policies == good
    assert running(mesh) == before  # the accepted cluster change (222) was rolled back too

    # Not wedged: the next change applies normally.
    mesh.apply(policies(virtual_service(4, subsets=False)))
    assert running(mesh).num_retries == 4


def test_translation_error_writes_nothing(mesh: LocalMesh) -> None:
    assert mesh.admin is not None
    mesh.apply(policies(virtual_service(3, subsets=True), destination_rule(50)))
    good = mesh.policies
    before = running(mesh)
    versions = mesh.admin.config_versions()

    # Loaded policies cannot carry it (the loader rejects a total weight of 0), but PolicySets built in
    # Python can; the translator refuses it.
    (vs,) = policies(virtual_service(5, subsets=True)).virtual_services
    route = vs.http[0]
    zero = tuple(dataclasses.replace(d, weight=0) for d in route.route)
    broken = PolicySet((dataclasses.replace(vs, http=(dataclasses.replace(route, route=zero),)),), ())
    with pytest.raises(PolicyError, match="every destination has weight 0"):
        mesh.apply(broken)
    assert mesh.policies == good
    assert running(mesh) == before
    assert mesh.admin.config_versions() == versions  # not even rewritten
