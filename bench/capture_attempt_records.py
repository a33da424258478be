"""Capture the per-attempt and per-request records of a real local mesh run, for the unit-test fixture.

Runs the default topology (order-service calls payment-service, then inventory-service, through its own
pod's sidecar) with payment-service failing 70 % of requests with 503. Payment's policy retries twice on
5xx (the order pods' sidecars do it; Istio's default since 1.24 no longer retries 503): a payment call
fails after 3 tries with probability 0.343. order-service's policy retries once on 5xx, so a user request
fails with probability 0.118, and the capture holds failed, retried and clean requests. It sends
requests to order-service through the client sidecar and writes, per sidecar, the lines of
``access.log`` and ``attempts.log`` in the window, plus the instance map, as one JSON file.

Usage::

    .venv/bin/python bench/capture_attempt_records.py [OUT] [--requests N] [--seed S]

OUT defaults to ``tests/data/attempts/retries_70pct.json``, the fixture of
``tests/unit/test_metrics_attempts.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx

from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.policy.loader import load_policy_text

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "attempts" / "retries_70pct.json"

POLICIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order-retry, namespace: platform-core}
spec:
  hosts: [order-service]
  http:
  - route:
    - destination: {host: order-service}
    retries: {attempts: 1, retryOn: 5xx}
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


def _lines_in(path: Path, start: float, end: float) -> list[str]:
    """The log lines of ``path`` whose ``start`` lies in the window (the mesh's own start-up is left out)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            when = float(json.loads(line)["start"])
        except (ValueError, KeyError, TypeError):
            continue
        if start <= when <= end:
            out.append(line)
    return out


def capture(requests: int, seed: int) -> dict[str, Any]:
    """Run the mesh, send ``requests`` requests to order-service, and return every sidecar's records."""
    with LocalMesh(prometheus=False, seed=seed, policies=load_policy_text(POLICIES, source="capture")) as mesh:
        payment = mesh.instances("payment-service")
        mesh.chaos.apply("error", {"status": 503, "probability": 0.7}, payment)
        start = time.time()
        statuses: list[int] = []
        with httpx.Client(timeout=10.0) as client:
            for _ in range(requests):
                r = client.get(mesh.sidecar_url + "/", headers={"Host": mesh.host_header("order-service")})
                statuses.append(r.status_code)
        end = time.time()
        mesh.chaos.clear_all()
        # Envoy flushes its file logs every 250 ms.
        time.sleep(0.6)
        pods = {sc.name: pod for pod, sc in mesh.pod_sidecars.items()}
        sidecars = {}
        for sc in mesh.sidecars:
            sidecars[sc.name] = {
                "pod": pods.get(sc.name),
                "access": _lines_in(sc.access_log_path, start, end),
                "attempts": _lines_in(sc.attempts_log_path, start, end),
            }
        return {
            "about": "records of bench/capture_attempt_records.py: default topology, payment 70 % 503 "
            "(payment retries 2 on 5xx), order retries 1 on 5xx",
            "window": [start, end],
            "statuses": statuses,
            "instances": [
                {"name": i.name, "service": i.service, "version": i.version, "address": i.address, "port": i.port}
                for i in mesh.instances()
            ],
            "sidecars": sidecars,
        }


def main() -> None:
    """Parse the arguments, capture, write the fixture."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    data = capture(args.requests, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    lines = sum(len(s["access"]) + len(s["attempts"]) for s in data["sidecars"].values())
    print(f"wrote {args.out}: {lines} record lines from {len(data['sidecars'])} sidecars, statuses {data['statuses']}")


if __name__ == "__main__":
    main()
