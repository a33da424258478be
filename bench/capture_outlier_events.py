"""Capture a real local mesh's outlier-detection event log and per-attempt records, for the unit-test fixture.

payment-service (3 instances) fails every request with 503 under a DestinationRule with
``consecutive5xxErrors: 3, interval: 0.5s, baseEjectionTime: 1s, maxEjectionPercent: 100`` and no retries.
Requests go one at a time through the client sidecar at about 40 per second for 3 s, so each instance is
ejected after 3 errors, returned on a sweep after 1-1.5 s, and ejected again: the log holds EJECT and
UNEJECT lines. Envoy's panic threshold is left at Istio's 0, so once every instance is ejected the sidecar
answers ``503 UH`` itself. The script writes the client sidecar's ``outlier.log`` and ``attempts.log`` lines
of the window, and the instance map as one JSON file.

Usage::

    .venv/bin/python bench/capture_outlier_events.py [OUT] [--seconds S] [--rate R] [--seed S]

OUT defaults to ``tests/data/outlier/payment_3_errors.json``, the fixture of
``tests/unit/test_metrics_outlier_events.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx

from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.local.sidecar import wait_log_flushed
from pytest_meshcheck.policy.loader import load_policy_text

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "outlier" / "payment_3_errors.json"

POLICIES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment-breaker, namespace: platform-core}
spec:
  host: payment-service
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 0.5s
      baseEjectionTime: 1s
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


def _attempt_lines(path: Path, start: float, end: float) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        try:
            when = float(json.loads(line)["start"])
        except (ValueError, KeyError, TypeError):
            continue
        if start <= when <= end:
            out.append(line)
    return out


def capture(seconds: float, rate: float, seed: int) -> dict[str, Any]:
    """Run the mesh, fail payment-service, send paced requests, and return the sidecar's lines."""
    with LocalMesh(prometheus=False, seed=seed, policies=load_policy_text(POLICIES, source="capture")) as mesh:
        payment = mesh.instances("payment-service")
        assert mesh.client is not None
        # The mesh's start-up writes nothing to the event log; anything there before the window is left out.
        log = mesh.client.outlier_log_path
        skip = len(log.read_text().splitlines()) if log.exists() else 0
        mesh.chaos.apply("error", {"status": 503, "probability": 1.0}, payment)
        start = time.time()
        statuses: list[int] = []
        with httpx.Client(timeout=10.0) as client:
            t0 = time.monotonic()
            for i in range(int(seconds * rate)):
                pause = t0 + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                r = client.get(mesh.sidecar_url + "/", headers={"Host": mesh.host_header("payment-service")})
                statuses.append(r.status_code)
        end = time.time()
        mesh.chaos.clear_all()
        wait_log_flushed(end)
        events = log.read_text().splitlines()[skip:]
        return {
            "about": "records of bench/capture_outlier_events.py: payment-service 100 % 503, consecutive5xxErrors 3, "
            "interval 0.5s, baseEjectionTime 1s, maxEjectionPercent 100, no retries, one request at a time",
            "window": [start, end],
            "statuses": statuses,
            "instances": [
                {"name": i.name, "service": i.service, "version": i.version, "address": i.address, "port": i.port}
                for i in mesh.instances()
            ],
            "sidecar": mesh.client.name,
            "outlier": events,
            "attempts": _attempt_lines(mesh.client.attempts_log_path, start, end),
        }


def main() -> None:
    """Parse the arguments, capture, write the fixture."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    data = capture(args.seconds, args.rate, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(
        f"wrote {args.out}: {len(data['outlier'])} event lines, {len(data['attempts'])} attempt lines, "
        f"statuses {sorted(set(data['statuses']))}"
    )


if __name__ == "__main__":
    main()
