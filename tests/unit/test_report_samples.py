"""Synthetic scenario records for the report tests (pure plumbing: no mesh needed), and checks of them.

The builders are imported by the other ``test_report_*`` modules and by the browser test. The numbers
are internally consistent (the success ratio per second matches the status counts, the chaos window
matches the dip), so a report drawn from them reads like a real one.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import asdict
from html.parser import HTMLParser
from typing import Any

from pytest_meshcheck.report.record import (
    ChaosRecord,
    CheckRecord,
    LoadSummary,
    PolicyRecord,
    ScenarioRecord,
)

T0 = 1_714_560_000.0  # 2024-05-01 10:40:00 UTC

POLICY_YAML = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
    retries:
      attempts: 3
      retryOn: 5xx
      perTryTimeout: 500ms"""


def load_series(
    seconds: int, rate: int, chaos: tuple[float, float], ratio_in_chaos: float, seed: int = 7
) -> tuple[dict[str, list[float]], int, int]:
    """Per-second series for ``seconds`` seconds; returns the series, requests and successes."""
    rng = random.Random(seed)
    series: dict[str, list[float]] = {
        "t": [],
        "success_ratio": [],
        "p50_ms": [],
        "p99_ms": [],
        "requests": [],
    }
    total = ok_total = 0
    for i in range(seconds):
        in_chaos = chaos[0] <= i < chaos[1]
        n = rate + rng.randint(-3, 3)
        p_ok = ratio_in_chaos if in_chaos else 0.999
        ok = sum(rng.random() < p_ok for _ in range(n))
        series["t"].append(T0 + i)
        series["success_ratio"].append(ok / n)
        series["p50_ms"].append(4.0 + rng.random() + (6.0 if in_chaos else 0.0))
        series["p99_ms"].append(15.0 + 5 * rng.random() + (40.0 if in_chaos else 0.0))
        series["requests"].append(float(n))
        total += n
        ok_total += ok
    return series, total, ok_total


def scenario(
    *,
    nodeid: str = "scenarios/test_retries.py::test_retry_masks_5xx[50%]",
    expected: float = 0.875,
    ratio_in_chaos: float = 0.875,
    seconds: int = 90,
    outcome: str = "passed",
) -> ScenarioRecord:
    """A retry scenario: 50% 503s on one service from t=20 s to t=60 s, 3 attempts expected to mask most."""
    chaos_window = (20.0, 60.0)
    series, total, ok = load_series(seconds, 100, chaos_window, ratio_in_chaos)
    chaos_n = sum(int(r) for t, r in zip(series["t"], series["requests"], strict=True) if 20 <= t - T0 < 60)
    chaos_ok = round(
        sum(
            s * r
            for t, s, r in zip(series["t"], series["success_ratio"], series["requests"], strict=True)
            if 20 <= t - T0 < 60
        )
    )
    observed = chaos_ok / chaos_n
    passed = outcome == "passed"
    half = 0.012
    check = CheckRecord(
        name="success rate",
        passed=passed,
        expected=expected,
        observed=observed,
        interval=[observed - half, observed + half],
        n=chaos_n,
        confidence=0.99,
        method="wilson",
        unit="ratio",
        reasons=[
            "retries.attempts: 3 (policies/reviews.yaml:13): 1 try + 3 retries",
            "retryOn: 5xx (line 14): the injected 503s are retried",
            "each attempt fails with p = 0.5, so success = 1 - 0.5^4 ... bounded by the per-try budget",
        ],
        detail="two-sided, tolerance 0.02",
        role="claim",
        alternative="two-sided",
        outcome="passed" if passed else "failed",
        alpha=0.0098,
        beta=0.05,
        delta=0.02,
        detects="would have caught a success rate below 85.5 % or above 89.5 % with 95 % probability",
    )
    latency = CheckRecord(
        name="p99 latency",
        passed=True,
        expected=0.5,
        observed=0.061,
        n=chaos_n,
        method="bound",
        unit="s",
        reasons=["perTryTimeout: 500ms (line 15)"],
        role="model",
        alternative="at-most",
    )
    verdict = "passed" if passed else "FAILED"
    message = (
        f"success rate: expected {expected:.4f} +-0.02, observed {observed:.4f} ({chaos_ok}/{chaos_n}); "
        f"99% Wilson interval [{observed - half:.4f}, {observed + half:.4f}] -> {verdict}"
    )
    if not passed:
        # As the scenario harness words a failure: the claim, the check, its policy lines, the report.
        policy_lines = "\n    ".join(check.reasons)
        message = (
            f"Retries mask a 50% 5xx error rate on reviews\n  {message}\n"
            f"  policy lines and defaults involved:\n    {policy_lines}\n  report: {nodeid}.html"
        )
    sent = list(itertools.accumulate(series["requests"]))
    retries = [[T0 + i, (50.0 if 20 <= i < 60 else 0.0)] for i in range(0, seconds, 2)]
    return ScenarioRecord(
        nodeid=nodeid,
        title="Retries mask a 50% 5xx error rate on reviews",
        description=(
            "reviews answers half of its requests with 503 for 40 seconds. The VirtualService retries 5xx "
            "up to 3 times, so callers should still see about 87.5% success."
        ),
        outcome=outcome,  # type: ignore[arg-type]
        message=message,
        checks=[check, latency],
        context={
            "mesh_context": "local",
            "istio_version": "1.30",
            "envoy_version": "1.40.0",
            "seed": 1234,
            "profile": "ci",
            "confidence": 0.99,
        },
        policies=[
            PolicyRecord(
                kind="VirtualService",
                name="reviews",
                namespace="default",
                file="policies/reviews.yaml",
                line=1,
                text=POLICY_YAML,
                highlight_lines=[12, 13, 14, 15],
            )
        ],
        chaos=[
            ChaosRecord(
                kind="error",
                service="reviews",
                instances=["reviews-v1-0", "reviews-v1-1"],
                spec={"status": 503, "ratio": 0.5},
                applied_at=T0 + chaos_window[0],
                reverted_at=T0 + chaos_window[1],
                proof={
                    "reviews-v1-0": {"served": 2410, "faults_injected": 1198},
                    "reviews-v1-1": {"served": 2388, "faults_injected": 1203},
                },
            )
        ],
        load=[
            LoadSummary(
                profile={"rate": 100, "duration_s": seconds, "connections": 8},
                started_at=T0,
                ended_at=T0 + seconds,
                requests=total,
                status_counts={"200": ok, "503": total - ok},
                latency_ms={"p50": 4.6, "p90": 9.8, "p99": 52.0, "max": 140.2},
                instance_counts={"reviews-v1-0": total // 2, "reviews-v1-1": total - total // 2},
                attempt_counts={"1": total - 2400, "2": 1200, "3": 800, "4": 400},
            )
        ],
        timeseries=series,
        prom_series={
            "retries": retries,
            "ejections_active": [[T0 + i, 0.0] for i in range(0, seconds, 2)],
            "overflow": [[T0 + i, 0.0] for i in range(0, seconds, 2)],
            "upstream_requests": [[T0 + i, 1.3 * sent[i]] for i in range(0, seconds, 2)],
        },
        metric_deltas={
            "cluster.outbound|9080||reviews.upstream_rq_retry": 2401.0,
            "cluster.outbound|9080||reviews.upstream_rq_503": 2401.0,
            "cluster.outbound|9080||reviews.upstream_rq_200": float(ok),
            "cluster.outbound|9080||reviews.upstream_rq_pending_overflow": 0.0,
        },
        response_flags={"-": ok, "URX": total - ok},
        started_at=T0,
        ended_at=T0 + seconds,
    )


def passing_record() -> ScenarioRecord:
    """A scenario whose policy held."""
    return scenario()


def failing_record() -> ScenarioRecord:
    """The same scenario where far fewer requests survived than the policy predicts."""
    return scenario(
        nodeid="scenarios/test_retries.py::test_retry_masks_5xx[broken-retry-on]",
        ratio_in_chaos=0.52,
        outcome="failed",
    )


def inconclusive_record() -> ScenarioRecord:
    """A scenario whose claim was inconclusive: below what a holding policy gives, not clearly broken.

    pytest failed it (an inconclusive check is never a pass); no check failed outright.
    """
    rec = scenario(
        nodeid="scenarios/test_retries.py::test_retry_masks_5xx[marginal]", ratio_in_chaos=0.862, outcome="failed"
    )
    claim = rec.checks[0]
    claim.passed = False
    claim.outcome = "inconclusive"
    claim.detail = "success rate: claimed about 87.5 % (delta 0.02) -> INCONCLUSIVE (not a pass)"
    rec.message = rec.message.replace("-> FAILED", "-> INCONCLUSIVE")
    return rec


def legacy_record_data() -> dict[str, Any]:
    """A scenario record as versions before check roles wrote it: no role, outcome, alpha, beta, delta, detects.

    Its claim and model checks are told apart by their names only, as those versions did.
    """
    data: dict[str, Any] = json.loads(failing_record().to_json())
    data["nodeid"] = "scenarios/test_retries.py::test_retry_legacy"
    new_fields = ("role", "alternative", "outcome", "alpha", "beta", "delta", "detects")
    chaos = {"name": "chaos live: error on reviews", "passed": True, "observed": 2401.0, "unit": "count"}
    model = dict(data["checks"][0], name="model: success ratio", passed=False)
    claim = dict(data["checks"][0], name="claim: success ratio about 87.50%", passed=False)
    data["checks"] = [chaos, model, claim, data["checks"][1]]
    for check in data["checks"]:
        for key in new_fields:
            check.pop(key, None)
    return data


def error_record() -> ScenarioRecord:
    """A scenario that broke while starting, before any data existed (no load given: the default)."""
    return ScenarioRecord(
        nodeid="scenarios/test_outlier.py::test_ejects_failing_host",
        title="Outlier detection ejects the failing host",
        outcome="error",
        message="MeshSetupError: envoy 'reviews-v1-0' exited with status 1 before becoming ready",
        context={"mesh_context": "local", "istio_version": "1.30", "seed": 99},
        error={
            "type": "MeshSetupError",
            "message": "envoy 'reviews-v1-0' exited with status 1 before becoming ready\n"
            "  log: /tmp/x/reviews-v1-0.log",
            "traceback": 'Traceback (most recent call last):\n  File "mesh.py", line 10, in start\n'
            "pytest_meshcheck.errors.MeshSetupError: envoy exited",
        },
        started_at=T0,
        ended_at=T0 + 1.5,
    )


def long_record(points: int = 20_000) -> ScenarioRecord:
    """A very long run: ``points`` seconds of per-second series and Prometheus samples."""
    record = scenario(nodeid="scenarios/test_soak.py::test_soak_retry", seconds=points)
    record.chaos[0].reverted_at = T0 + points * 0.75
    record.ended_at = T0 + points
    return record


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the page's visible text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def remote_references(html: str) -> list[str]:
    """What would make a browser fetch or run something: scripts, remote URLs in attributes or CSS."""
    page = Tags(html)
    found = [f"<{t}>" for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link")]
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            if key.startswith("on"):
                found.append(f"{tag} {key}=")
            if key in ("href", "src", "xlink:href", "action", "srcset") and re.match(
                r"\s*(https?:|//|javascript:)", value
            ):
                found.append(f"{tag} {key}={value}")
    found += re.findall(r"url\(\s*['\"]?(?:https?:|//)[^)]*\)|@import[^;]*", html)
    return found


# --- checks of the samples themselves ---------------------------------------------------------------


def test_samples_are_consistent() -> None:
    rec = passing_record()
    total = rec.load[0].requests
    assert total == sum(rec.timeseries["requests"])
    assert rec.load[0].status_counts["200"] + rec.load[0].status_counts["503"] == total
    check = rec.checks[0]
    assert check.interval is not None
    assert check.observed is not None
    assert check.interval[0] < check.observed < check.interval[1]
    assert abs(check.observed - 0.875) < 0.02  # the passing sample does pass its own claim
    failing = failing_record().checks[0]
    assert failing.observed is not None
    assert failing.observed < 0.875 - 0.1


def test_samples_round_trip_through_json() -> None:
    for rec in (passing_record(), failing_record()):
        again = ScenarioRecord.from_dict(json.loads(rec.to_json()))
        assert asdict(again) == asdict(rec)
