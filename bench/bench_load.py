"""Benchmark the load engine through one real Envoy (``--concurrency 1``, ``direct_response`` route).

Prints, from the same run and the same Envoy:

1. closed-loop throughput of the engine (8 connections) against ``wrk -t1 -c8`` and ``hey -c 8``, in
   interleaved rounds, with the per-round ratio and its median (absolute numbers on a shared machine are noisy;
   the ratio within a round is what counts);
2. open-loop achieved rate, its error against the target, and latency percentiles at 1000 and 5000 req/s.

Run from the repository root: ``.venv/bin/python bench/bench_load.py [--rounds 5] [--duration 2]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_meshcheck.load import ClosedLoop, OpenLoop, run_load
from tests.doubles.static_envoy import EnvoyProcess, bootstrap

CONNECTIONS = 8


def run_tool(command: list[str], timeout: float) -> float:
    """Run wrk or hey and parse its requests per second."""
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no Requests/sec in output of {command}:\n{out}")
    return float(match.group(1))


def engine_closed(url: str, duration: float) -> tuple[float, dict[int, int]]:
    """Closed-loop completions per second of the engine, and its status histogram."""
    result = run_load(url, ClosedLoop(CONNECTIONS, duration, 10_000_000), host="order-service")
    first_send = float(np.nanmin(result.records.sent))
    return result.count / (result.elapsed - first_send), result.status_histogram()


def closed_loop(url: str, rounds: int, duration: float) -> None:
    tools = {
        "wrk -t1": ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "-H", "Host: order-service", url],
        "wrk -t2": ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration:g}s", "-H", "Host: order-service", url],
        "hey": ["hey", "-c", str(CONNECTIONS), "-z", f"{duration:g}s", "-host", "order-service", url],
    }
    rows = []
    ratios: dict[str, list[float]] = {name: [] for name in tools}
    for r in range(rounds):
        engine, statuses = engine_closed(url, duration)
        if set(statuses) != {200}:
            raise RuntimeError(f"engine saw non-200 responses: {statuses}")
        row: list[object] = [r + 1, round(engine)]
        for name, command in tools.items():
            other = run_tool(command, timeout=duration + 30)
            ratios[name].append(engine / other)
            row += [round(other), f"{engine / other:.2f}"]
        rows.append(row)
    headers = ["round", "engine req/s"]
    for name in tools:
        headers += [f"{name} req/s", f"engine/{name}"]
    print(f"\n## Closed loop, {CONNECTIONS} connections, {duration:g}s per tool per round")
    print(tabulate(rows, headers=headers))
    for name, values in ratios.items():
        print(f"median engine/{name}: {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})")


def open_loop(url: str, rates: list[float], duration: float, repeats: int) -> None:
    rows = []
    for rate in rates:
        for _ in range(repeats):
            n = int(rate * duration)
            result = run_load(url, OpenLoop(rate, duration, n), host="order-service")
            p = result.latency_percentiles((50, 99, 99.9))
            lag = result.records.sent - result.records.intended
            rows.append(
                [
                    f"{rate:g}",
                    result.count,
                    result.success_count,
                    f"{result.achieved_rate:.1f}",
                    f"{(result.achieved_rate / rate - 1) * 100:+.2f}%",
                    f"{p[50] * 1e3:.2f}",
                    f"{p[99] * 1e3:.2f}",
                    f"{p[99.9] * 1e3:.2f}",
                    f"{float(np.nanpercentile(lag, 99)) * 1e3:.2f}",
                ]
            )
    print(f"\n## Open loop, {duration:g}s per run; latency from intended send time")
    print(
        tabulate(
            rows,
            headers=[
                "target/s",
                "requests",
                "2xx",
                "achieved/s",
                "error",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "send lag p99 ms",
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved closed-loop rounds (default 5)")
    parser.add_argument("--duration", type=int, default=2, help="whole seconds per closed-loop run (default 2)")
    parser.add_argument("--open-duration", type=float, default=3.0, help="seconds per open-loop run (default 3)")
    parser.add_argument("--open-repeats", type=int, default=2, help="open-loop runs per rate (default 2)")
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH; install it (Debian: apt-get install {tool})")
    with EnvoyProcess(bootstrap()) as envoy:
        url = f"{envoy.url}/"
        print(f"envoy pid {envoy.proc.pid} --concurrency 1, direct_response, listener {url}")
        warm = run_load(url, ClosedLoop(CONNECTIONS, 0.5, 100_000), host="order-service")  # warm up both sides
        print(f"engine event loop: {warm.event_loop} (uvloop is used when installed)")
        started = time.monotonic()
        closed_loop(url, args.rounds, args.duration)
        open_loop(url, [1000.0, 5000.0], args.open_duration, args.open_repeats)
        print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
