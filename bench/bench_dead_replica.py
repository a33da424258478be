"""How often a retry lands on the dead replica again, under Istio's previous_hosts predicate.

Run from the repository root: ``.venv/bin/python bench/bench_dead_replica.py [--runs 5] [--requests 2000]``.

One catalog-service replica of three answers 503 to everything; the route retries twice on 5xx. Istio
sets ``retry_host_predicate: previous_hosts`` with ``host_selection_retry_max_attempts: 5``, and the
default least-request balancer often picks the replica that fails fast, so a retry can still land on it.
Prints the ``x-envoy-attempt-count`` histogram per run and the share of retried requests that needed a
third try. This is the figure behind ``test_retries_skip_a_dead_replica``'s claim (at most 5 %).
"""

from __future__ import annotations

import argparse

from pytest_meshcheck.harness.chaos import Chaos
from pytest_meshcheck.harness.load import LoadDriver
from pytest_meshcheck.harness.policies import MeshPolicies
from pytest_meshcheck.local.mesh import LocalMesh

RETRY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-retry, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
    retries: {attempts: 2, retryOn: 5xx}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    total: dict[int | None, int] = {}
    with LocalMesh(prometheus=False) as mesh:
        policies = MeshPolicies(mesh)
        policies.apply(RETRY)
        chaos, load = Chaos(mesh, policies), LoadDriver(mesh)
        try:
            for run in range(args.runs):
                with chaos.error("catalog-service", 1.0, 503, instances=1):
                    result = load.closed("catalog-service", concurrency=4, requests=args.requests)
                histogram = result.attempt_histogram()
                for tries, count in histogram.items():
                    total[tries] = total.get(tries, 0) + count
                print(
                    f"run {run + 1}: attempts {dict(sorted(histogram.items(), key=str))}, "
                    f"statuses {result.status_histogram()}"
                )
        finally:
            chaos.revert_all()
            policies.restore()
    retried = sum(c for a, c in total.items() if a and a >= 2)
    again = sum(c for a, c in total.items() if a and a >= 3)
    print(
        f"total {dict(sorted(total.items(), key=str))}: {again} of {retried} retried requests "
        f"({again / max(retried, 1):.2%}) reached the dead replica again"
    )


if __name__ == "__main__":
    main()
