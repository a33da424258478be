"""The platform README's three "Testing Resilience" procedures, run verbatim with curl against ``meshcheck up``.

The bash blocks come from ``tests/data/platform-readme/testing-resilience.md`` (the README's section,
verbatim) and run in bash as written, against ``meshcheck up`` on the README's own ports (gateway 8090,
chaos API 8092), with the platform's policies as written. Only ``sleep 60`` is left out: with those
policies nothing is ejected, so there is nothing to wait for (the corrected breaker's ejection and return
are timed in ``scenarios/test_call_graph.py``). What each procedure must show is what Istio would do with
the same YAML:

* Scenario 1: payment-service fails every request, so every ``/api/orders`` fails with payment's 500, naming
  the hop (order's own retries and payment's cannot help); after the DELETE, orders succeed again.
* Scenario 2: one ``/api/catalog/products`` request with 50 % errors at catalog: a 200, or a 500 after all 4
  tries (3 retries on 5xx).
* Scenario 3: 20 s of latency at inventory: the request ends with 504 "upstream request timeout" after the
  8 s route timeout (4 tries of 2 s each), not after 20 s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.envoy]

README = Path(__file__).resolve().parents[1] / "data" / "platform-readme" / "testing-resilience.md"
GATEWAY, CHAOS = "http://localhost:8090", "http://localhost:8092"


def procedures() -> dict[str, str]:
    """``{"Scenario 1: Circuit Breaker": "<bash block>", ...}`` from the README section."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"^### (Scenario \d+: [^\n]+)\n+```bash\n(.*?)\n```", text, flags=re.M | re.S)
    return dict(found)


def run_block(block: str) -> tuple[str, str, float]:
    """Run a README block in bash as written (without ``sleep``); return stdout, stderr and seconds."""
    script = "\n".join(line for line in block.splitlines() if not line.strip().startswith("sleep "))
    t0 = time.monotonic()
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr, time.monotonic() - t0


def bodies(stdout: str) -> list[object]:
    """The bodies curl printed back to back: JSON documents, or Envoy's plain-text local replies."""
    decoder = json.JSONDecoder()
    out: list[object] = []
    i = 0
    while i < len(stdout):
        if stdout[i].isspace():
            i += 1
            continue
        if stdout[i] == "{":
            doc, i = decoder.raw_decode(stdout, i)
            out.append(doc)
        else:
            end = stdout.find("{", i)
            end = len(stdout) if end < 0 else end
            out.append(stdout[i:end])
            i = end
    return out


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``meshcheck up`` as the README's user starts it: default ports, the platform's policies as written."""
    tmp = tmp_path_factory.mktemp("up")
    stderr = (tmp / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_meshcheck.cli", "up"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if "press Ctrl-C to stop" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, (tmp / "stderr.txt").read_text()
        yield
    finally:
        proc.send_signal(2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        stderr.close()


@pytest.fixture
def client(up: None) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as c:
        yield c
        for service in ("payment-service", "catalog-service", "inventory-service"):
            c.delete(f"{CHAOS}/api/chaos/scenarios/{service}")


def test_the_section_has_three_procedures() -> None:
    assert list(procedures()) == ["Scenario 1: Circuit Breaker", "Scenario 2: Retry", "Scenario 3: Timeout"]


def test_scenario_1_orders_fail_while_payment_fails_and_recover_after_the_delete(client: httpx.Client) -> None:
    stdout, _, _ = run_block(procedures()["Scenario 1: Circuit Breaker"])
    docs = bodies(stdout)
    applied, orders, deleted = docs[0], docs[1:-1], docs[-1]
    assert isinstance(applied, dict), applied
    assert applied["applied"] == "error", applied
    assert len(orders) == 50
    # Every order failed with payment's status, and says which hop failed: order's sidecar retried payment
    # 3 times, the client's retried order 3 times, and nothing ejects payment (it has no DestinationRule).
    for body in orders:
        assert isinstance(body, dict), body
        assert body["service"] == "order-service"
        assert body["failed_hop"] == "order-service -> payment-service"
        assert body["calls"] == [{"service": "payment-service", "status": 500}]
    assert isinstance(deleted, dict), deleted
    assert deleted["cleared"] == "payment-service", deleted
    # Step 6: traffic resumes (with these policies at once; nothing was ejected).
    healed = [client.get(f"{GATEWAY}/api/orders") for _ in range(5)]
    assert [r.status_code for r in healed] == [200] * 5
    assert all(r.json()["calls"][0] == {"service": "payment-service", "status": 200} for r in healed)


def test_scenario_2_one_catalog_request_is_retried_up_to_four_tries(client: httpx.Client) -> None:
    stdout, _, _ = run_block(procedures()["Scenario 2: Retry"])
    applied, answer = bodies(stdout)
    assert isinstance(applied, dict), applied
    assert applied["spec"] == {"status": 500, "probability": 0.5}, applied
    assert isinstance(answer, dict), answer
    assert answer["service"] == "catalog-service"
    # The same request again, reading the status and the attempt count the README's curl does not print.
    again = client.get(f"{GATEWAY}/api/catalog/products")
    attempts = int(again.headers["x-envoy-attempt-count"])
    assert (again.status_code == 200 and 1 <= attempts <= 4) or (again.status_code == 500 and attempts == 4)


def test_scenario_3_inventory_times_out_after_8s_not_20s(client: httpx.Client) -> None:
    stdout, stderr, took = run_block(procedures()["Scenario 3: Timeout"])
    applied, answer = bodies(stdout)
    assert isinstance(applied, dict), applied
    assert applied["spec"]["delay_ms"] == 20000, applied
    assert answer == "upstream request timeout"
    assert "real" in stderr  # bash's `time` printed the duration
    # The 8 s route timeout ended it: Envoy's "upstream request timeout" above, not the 20 s delay running out,
    # and not before the budget (a lower bound, which load cannot break).
    assert took >= 8.0
