"""Benchmark ``meshcheck lint``: all rules on the platform policies, and on 1,000 generated policy files.

Prints the wall time of each (median of ``--rounds`` runs), the findings count and the per-file cost. The
platform target is < 1 s. Generated files mix VirtualServices and DestinationRules over the platform's
services, with a share of deliberate mistakes so every rule family does work.

Run from the repository root: ``.venv/bin/python bench/bench_lint.py [--files 1000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.lint import lint_paths

SERVICES = ("catalog-service", "order-service", "payment-service", "inventory-service")


def generated_policy(i: int) -> str:
    """One file: a VirtualService and a DestinationRule for their own host, every 7th with a timing mistake."""
    svc = SERVICES[i % len(SERVICES)]
    per_try = "5s" if i % 7 == 0 else "1s"
    mep = "" if i % 5 == 0 else ", maxEjectionPercent: 100"
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: vs-{i}, namespace: platform-core}}\n"
        f"spec:\n  hosts: [{svc}-{i}.platform-core.svc.cluster.local]\n  http:\n"
        "  - match: [{uri: {prefix: /api}}]\n"
        f"    route:\n    - destination: {{host: {svc}, subset: v1}}\n"
        f"    retries: {{attempts: 3, perTryTimeout: {per_try}, retryOn: '5xx,reset'}}\n    timeout: 4s\n"
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata: {{name: dr-{i}, namespace: platform-core}}\n"
        f"spec:\n  host: {svc}\n  trafficPolicy:\n"
        "    connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5}}\n"
        f"    outlierDetection: {{consecutive5xxErrors: 3{mep}}}\n"
        "  subsets: [{name: v1, labels: {version: v1}}]\n"
    )


def timed(paths: list[Path], rounds: int) -> tuple[float, int]:
    """Median seconds of ``rounds`` lint runs, and the findings count."""
    times: list[float] = []
    count = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        count = len(lint_paths(paths).findings)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    secs, found = timed([platform_policies_dir()], args.rounds)
    verdict = "ok" if secs < 1.0 else "OVER the 1 s target"
    print(f"platform policies: {secs * 1000:.1f} ms, {found} findings ({verdict})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.files):
            (root / f"policy-{i:04d}.yaml").write_text(generated_policy(i))
        secs, found = timed([root], args.rounds)
    print(
        f"{args.files} generated files ({2 * args.files} policies): {secs:.2f} s, {found} findings, "
        f"{secs / args.files * 1000:.2f} ms/file"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
