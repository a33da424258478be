"""Parsing, joining and picking Envoy's per-request and per-attempt records (``metrics/attempts.py``).

The fixture ``tests/data/attempts/retries_70pct.json`` holds the record lines of a real local mesh run
(``bench/capture_attempt_records.py`` regenerates it): 24 requests to order-service, whose pods call
payment-service (failing 70 % with 503, retried twice by payment's policy) and inventory-service; order's
policy retries once. It also holds the statuses the client saw, in order, which the join must reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.metrics.attempts import (
    AttemptRecords,
    CallNode,
    LogRecord,
    is_failure,
    join,
    parse_record,
    pick_samples,
    read_records,
)

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "attempts" / "retries_70pct.json"


@pytest.fixture(scope="module")
def capture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def _records(capture: dict[str, Any]) -> AttemptRecords:
    records: list[LogRecord] = []
    for sidecar, logs in capture["sidecars"].items():
        for kind, key in (("call", "access"), ("attempt", "attempts")):
            for line in logs[key]:
                record = parse_record(line, kind, sidecar)  # type: ignore[arg-type]
                assert record is not None, line
                records.append(record)
    return AttemptRecords(
        records=tuple(records),
        client="envoy",
        pods={name: logs["pod"] for name, logs in capture["sidecars"].items() if logs["pod"]},
        hosts={f"{i['address']}:{i['port']}": i["name"] for i in capture["instances"]},
    )


@pytest.fixture(scope="module")
def trees(capture: dict[str, Any]) -> list[CallNode]:
    return join(_records(capture))


# ------------------------------------------------------------------------------------------------ parsing


def test_every_captured_line_parses_with_typed_fields(capture: dict[str, Any]) -> None:
    data = _records(capture)
    attempts = [r for r in data.records if r.kind == "attempt"]
    calls = [r for r in data.records if r.kind == "call"]
    assert attempts
    assert calls
    assert all(isinstance(r.status, int) and r.status in (200, 503) for r in data.records)
    assert all(r.attempts is None for r in attempts)
    assert all(isinstance(r.attempts, int) and r.attempts >= 1 for r in calls)
    assert all(r.request_id and r.upstream_host in data.hosts for r in attempts)
    assert {r.service for r in attempts} == {"order-service", "payment-service", "inventory-service"}


def test_a_torn_or_foreign_line_is_skipped_not_guessed() -> None:
    line = json.dumps({"start": "1714560000.250000", "response_code": 503, "request_id": "r"})
    assert parse_record(line[:-5], "attempt", "envoy") is None
    assert parse_record("[1, 2]", "attempt", "envoy") is None
    assert parse_record(json.dumps({"response_code": 200}), "call", "envoy") is None
    record = parse_record(line, "attempt", "envoy")
    assert record is not None
    assert (record.start, record.status, record.flags, record.duration_ms) == (1714560000.25, 503, "-", None)


def test_read_records_keeps_the_window_and_tolerates_a_missing_file(tmp_path: Path) -> None:
    lines = [json.dumps({"start": f"{t:.6f}", "response_code": 200, "request_id": str(t)}) for t in (10.0, 20.0, 30.0)]
    path = tmp_path / "attempts.log"
    path.write_text("\n".join(lines) + '\n{"start":"25.0", torn')
    assert [r.request_id for r in read_records(path, "attempt", "envoy", 15.0, 30.0)] == ["20.0", "30.0"]
    assert list(read_records(tmp_path / "absent.log", "attempt", "envoy", 0.0, 99.0)) == []


# ------------------------------------------------------------------------------------------------ joining


def test_one_tree_per_user_request_with_the_status_the_client_saw(
    capture: dict[str, Any], trees: list[CallNode]
) -> None:
    assert [t.record.status for t in trees] == capture["statuses"]
    assert all(t.source is None and t.record.service == "order-service" for t in trees)


def test_every_attempt_record_is_placed_once_and_matches_envoys_count(
    capture: dict[str, Any], trees: list[CallNode]
) -> None:
    placed = [a.record for t in trees for _, call in t.walk() for a in call.attempts]
    logged = sum(len(logs["attempts"]) for logs in capture["sidecars"].values())
    assert len(placed) == len(set(map(id, placed))) == logged
    calls = [call for t in trees for _, call in t.walk()]
    assert len(calls) == sum(len(logs["access"]) for logs in capture["sidecars"].values())
    assert all(call.record.attempts == len(call.attempts) for call in calls)


def test_hop_two_calls_hang_under_the_attempt_that_reached_their_pod(trees: list[CallNode]) -> None:
    for tree in trees:
        rid = tree.record.request_id
        for hop, call in tree.walk():
            assert call.record.request_id == rid
            for number, attempt in enumerate(call.attempts, start=1):
                assert attempt.number == number
                assert attempt.record.request_id == rid
                for child in attempt.calls:
                    assert child.source == attempt.instance
                    assert child.record.start >= attempt.record.start - 0.002
            starts = [a.record.start for a in call.attempts]
            assert starts == sorted(starts)
            if hop == 2:
                assert call.source is not None
                assert call.source.startswith("order-service-")


def test_hop_two_retries_appear_under_hop_one_attempts(trees: list[CallNode]) -> None:
    hop2_retried = [
        (tree, attempt)
        for tree in trees
        for attempt in tree.attempts
        for child in attempt.calls
        if child.record.service == "payment-service" and len(child.attempts) > 1
    ]
    assert hop2_retried
    # A payment call that failed after its 3 tries makes order answer 503 without calling inventory.
    for _, attempt in hop2_retried:
        payment = next(c for c in attempt.calls if c.record.service == "payment-service")
        services = [c.record.service for c in attempt.calls]
        if payment.record.status == 503:
            assert len(payment.attempts) == 3
            assert payment.record.flags == "URX"
            assert services == ["payment-service"]
            assert attempt.record.status == 503
        else:
            assert services == ["payment-service", "inventory-service"]


def _rec(kind: str, sidecar: str, start: float, ms: float, status: int, **extra: Any) -> LogRecord:
    fields: dict[str, Any] = {
        "listener": "outbound",
        "request_id": "r1",
        "method": "GET",
        "path": "/",
        "authority": "order-service:8084",
        "cluster": "outbound|8084||order-service",
        "upstream_host": "10.0.0.1:1",
        "flags": "-",
        "details": "",
        "attempts": None,
    }
    fields.update(extra)
    return LogRecord(kind=kind, sidecar=sidecar, start=start, duration_ms=ms, status=status, **fields)  # type: ignore[arg-type]


def test_a_call_made_after_its_attempt_timed_out_stays_with_that_attempt() -> None:
    # Two hop-1 attempts reach the same pod (the first cut by a per-try timeout); the pod's call for the
    # first attempt is still running when the retry starts, and its second call starts after the retry.
    pay = {"authority": "payment-service:8080", "upstream_host": "10.0.0.2:1"}
    records = (
        _rec("call", "envoy", 0.000, 300, 200, attempts=2),
        _rec("attempt", "envoy", 0.001, 100, 0, flags="UT"),
        _rec("attempt", "envoy", 0.130, 20, 200),
        _rec("call", "envoy-order-0", 0.010, 150, 200, attempts=1, **pay),
        _rec("attempt", "envoy-order-0", 0.011, 149, 200, **pay),
        _rec("call", "envoy-order-0", 0.135, 5, 200, attempts=1, **pay),
        _rec("attempt", "envoy-order-0", 0.136, 4, 200, **pay),
    )
    (tree,) = join(
        AttemptRecords(records, "envoy", {"envoy-order-0": "order-0"}, {"10.0.0.1:1": "order-0", "10.0.0.2:1": "pay-0"})
    )
    first, second = tree.attempts
    assert [c.record.start for c in first.calls] == [0.010]
    assert [c.record.start for c in second.calls] == [0.135]
    assert first.calls[0].attempts[0].instance == "pay-0"


def test_gateway_calls_are_not_user_requests_twice() -> None:
    records = (
        _rec("call", "envoy", 0.0, 5, 200, listener="gateway", attempts=1),
        _rec("attempt", "envoy", 0.0005, 4, 200, listener="gateway", upstream_host="127.0.0.1:9"),
        _rec("call", "envoy", 0.001, 3, 200, attempts=1),
        _rec("attempt", "envoy", 0.0015, 2, 200),
    )
    (tree,) = join(AttemptRecords(records, "envoy", {}, {"10.0.0.1:1": "order-0"}))
    assert tree.record.listener == "outbound"
    assert [a.instance for a in tree.attempts] == ["order-0"]


# ------------------------------------------------------------------------------------------------ picking


def test_picks_from_the_capture_are_a_failure_the_slowest_and_a_retried_request(trees: list[CallNode]) -> None:
    picks = pick_samples(trees)
    by_reason = {reason: tree for reasons, tree in picks for reason in reasons}
    assert set(by_reason) == {"failed", "slowest", "retried"}
    assert len({id(t) for _, t in picks}) == len(picks)
    failures = [t for t in trees if is_failure(t)]
    assert is_failure(by_reason["failed"])
    assert by_reason["failed"].total_attempts == max(t.total_attempts for t in failures)
    assert by_reason["slowest"].record.duration_ms == max(t.record.duration_ms or 0 for t in trees)
    assert by_reason["retried"].retried


def _tree(rid: str, status: int, ms: float, attempts: int, start: float) -> CallNode:
    recs = [_rec("call", "envoy", start, ms, status, request_id=rid, attempts=attempts)]
    recs += [_rec("attempt", "envoy", start + 0.001 * (i + 1), 1, status, request_id=rid) for i in range(attempts)]
    (tree,) = join(AttemptRecords(tuple(recs), "envoy", {}, {}))
    return tree


def test_one_request_fitting_every_pick_is_shown_once_with_every_reason() -> None:
    only = _tree("a", 503, 50, 3, 0.0)
    clean = _tree("b", 200, 5, 1, 1.0)
    assert pick_samples([only, clean]) == [(["failed", "slowest", "retried"], only)]


def test_ties_go_to_the_earliest_and_the_retried_pick_prefers_a_success() -> None:
    failed_a, failed_b = _tree("a", 503, 9, 2, 0.0), _tree("b", 503, 9, 2, 1.0)
    ok_retried, slow = _tree("c", 200, 5, 2, 2.0), _tree("d", 200, 90, 1, 3.0)
    picks = pick_samples([failed_a, failed_b, ok_retried, slow])
    assert picks == [(["failed"], failed_a), (["slowest"], slow), (["retried"], ok_retried)]


def test_nothing_to_pick_without_requests_or_failures() -> None:
    assert pick_samples([]) == []
    clean = _tree("a", 200, 5, 1, 0.0)
    assert pick_samples([clean]) == [(["slowest"], clean)]
