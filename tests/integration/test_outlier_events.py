"""Envoy's outlier event log on a real local mesh: an ejection shows up as an event naming the right instance.

One of payment-service's three instances answers 503 to everything; payment's DestinationRule ejects after
3 consecutive 5xx (``maxEjectionPercent: 100``) and its VirtualService does not retry, so each request is one
attempt. Requests go one at a time through the client sidecar.
"""

from __future__ import annotations

import time

import httpx
import pytest

from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.metrics.outlier_events import count_before_ejection
from pytest_meshcheck.policy import load_policy_text

pytestmark = pytest.mark.envoy

POLICIES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment-breaker, namespace: platform-core}
spec:
  host: payment-service
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-no-retry, namespace: platform-core}
spec:
  hosts: [payment-service]
  http:
  - route:
    - destination: {host: payment-service}
    retries: {attempts: 0}
"""

REQUESTS = 30


def test_an_ejection_is_logged_with_the_faulted_instance_and_splits_its_attempts() -> None:
    with LocalMesh(prometheus=False, seed=4, policies=load_policy_text(POLICIES, source="test")) as mesh:
        payment = mesh.instances("payment-service")
        bad = payment[1]
        start = time.time()
        assert mesh.outlier_events("payment-service", start - 60.0, start) == []
        mesh.chaos.apply("error", {"status": 503, "probability": 1.0}, [bad])
        statuses = []
        with httpx.Client(timeout=10.0) as client:
            for _ in range(REQUESTS):
                r = client.get(mesh.sidecar_url + "/", headers={"Host": mesh.host_header("payment-service")})
                statuses.append(r.status_code)
        end = time.time()
        events = mesh.outlier_events("payment-service", start, end)
        others = mesh.outlier_events("order-service", start, end)
        records = mesh.attempt_records(start, end)
        assert mesh.client is not None
        client_sidecar = mesh.client.name

    # One ejection, of the faulted instance, by the client's sidecar, inside the window; nothing else.
    assert [(e.instance, e.event.action, e.event.enforced) for e in events] == [(bad.name, "EJECT", True)]
    event = events[0].event
    assert event.sidecar == client_sidecar
    assert event.upstream_host == f"{bad.address}:{bad.port}"
    assert event.cluster.endswith(mesh.topology.service("payment-service").fqdn)
    assert event.kind == "CONSECUTIVE_5XX"
    assert start - 0.001 <= event.time <= end
    assert others == []

    # The split: exactly 3 errors before the ejection, and the client saw exactly 3 failures in all.
    counts = count_before_ejection(events, records)
    assert set(counts) == {bad.name}
    assert counts[bad.name].errors_before == 3
    assert statuses.count(503) == 3 + len(counts[bad.name].dispatched_after)
    assert statuses.count(200) == REQUESTS - statuses.count(503)
