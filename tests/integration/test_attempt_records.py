"""Every sidecar's per-attempt records, joined by ``x-request-id``, on a real local mesh (issue 9, item 6).

Default topology: order-service's pods call payment-service, then inventory-service, through their own
sidecars. payment-service fails 50 % of requests with 503; payment's policy retries twice on 5xx (in the
order pods' sidecars) and order's policy retries twice on 5xx (in the client sidecar). Each request
carries its own ``x-request-id``, so every tree can be checked against what the client saw and against
payment's own execution ledger, which counts the attempts that reached it per request id.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.metrics.attempts import join
from pytest_meshcheck.policy import load_policy_text
from pytest_meshcheck.report.sample_requests import collect_sample_requests

pytestmark = pytest.mark.envoy

POLICIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order-retry, namespace: platform-core}
spec:
  hosts: [order-service]
  http:
  - route:
    - destination: {host: order-service}
    retries: {attempts: 2, retryOn: 5xx}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-retry, namespace: platform-core}
spec:
  hosts: [payment-service]
  http:
  - route:
    - destination: {host: payment-service}
    retries: {attempts: 2, retryOn: 5xx}
"""

REQUESTS = 30


def test_joined_trees_show_hop_two_retries_under_hop_one_attempts_with_one_request_id() -> None:
    with LocalMesh(prometheus=False, seed=3, policies=load_policy_text(POLICIES, source="test")) as mesh:
        mesh.chaos.apply("error", {"status": 503, "probability": 0.5}, mesh.instances("payment-service"))
        sent: dict[str, httpx.Response] = {}
        start = time.time()
        with httpx.Client(timeout=10.0) as client:
            for _ in range(REQUESTS):
                rid = str(uuid.uuid4())
                headers = {"Host": mesh.host_header("order-service"), "x-request-id": rid}
                sent[rid] = client.get(mesh.sidecar_url + "/", headers=headers)
        end = time.time()
        data = mesh.attempt_records(start, end)
        ledger = mesh.ledger("payment-service")
        section = collect_sample_requests(mesh, start, end)
    trees = {t.record.request_id: t for t in join(data)}

    # One tree per request, under the id the client sent, with the status and attempt count it saw.
    assert set(trees) == set(sent)
    for rid, response in sent.items():
        tree = trees[rid]
        assert tree.record.status == response.status_code
        assert len(tree.attempts) == int(response.headers["x-envoy-attempt-count"])
        for _, call in tree.walk():
            assert call.record.request_id == rid
            assert call.record.attempts == len(call.attempts)

    # Hop-2 retries hang under a hop-1 attempt, in the sidecar of the pod that attempt reached.
    retried_under_hop1 = [
        (attempt, child)
        for tree in trees.values()
        for attempt in tree.attempts
        for child in attempt.calls
        if child.record.service == "payment-service" and len(child.attempts) > 1
    ]
    assert retried_under_hop1
    for attempt, child in retried_under_hop1:
        assert child.source == attempt.instance
        assert attempt.instance is not None
        assert attempt.instance.startswith("order-service-")
        assert all(a.instance is not None and a.instance.startswith("payment-service-") for a in child.attempts)

    # payment's own ledger counts, per request id, the attempts that reached it: the tree has each one.
    entries = ledger["requests"]
    for rid, tree in trees.items():
        payment_attempts = sum(
            len(call.attempts) for _, call in tree.walk() if call.record.service == "payment-service"
        )
        assert payment_attempts == entries[rid][0], rid

    # The report section picks from the same trees.
    assert section["available"] is True
    assert section["requests"] == REQUESTS
    picked = {r for s in section["samples"] for r in s["reasons"]}
    assert {"slowest", "retried"} <= picked
    assert all(s["complete"] for s in section["samples"])
