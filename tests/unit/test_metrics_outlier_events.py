"""Parsing Envoy's outlier event log and splitting a host's attempts at its ejection (``metrics/outlier_events.py``).

The fixture ``tests/data/outlier/payment_3_errors.json`` holds the client sidecar's ``outlier.log`` and
``attempts.log`` lines of a real local mesh run (``bench/capture_outlier_events.py`` regenerates it): three
payment-service instances all answering 503, ``consecutive5xxErrors: 3``, ``baseEjectionTime: 1s``,
``maxEjectionPercent: 100``, no retries, one request at a time at 40 per second for 3 s. Each instance was
ejected after 3 errors, returned, and ejected again. The first ejection reached the worker at once; Envoy
delivers the next ones with its 1 s update merge window, so the sidecar kept sending those instances
requests after their EJECT events: exactly the attempts the split must keep out of the count.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.metrics.attempts import AttemptRecords, parse_record
from pytest_meshcheck.metrics.outlier_events import (
    STAMP_RESOLUTION,
    EjectionCount,
    InstanceEvent,
    OutlierEvent,
    count_before_ejection,
    instance_events,
    parse_event,
    read_events,
)

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "outlier" / "payment_3_errors.json"


@pytest.fixture(scope="module")
def capture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def _events(capture: dict[str, Any]) -> list[OutlierEvent]:
    out = []
    for line in capture["outlier"]:
        event = parse_event(line, capture["sidecar"])
        assert event is not None, line
        out.append(event)
    return out


def _records(capture: dict[str, Any]) -> AttemptRecords:
    records = []
    for line in capture["attempts"]:
        record = parse_record(line, "attempt", capture["sidecar"])
        assert record is not None, line
        records.append(record)
    return AttemptRecords(
        records=tuple(records),
        client=capture["sidecar"],
        pods={},
        hosts={f"{i['address']}:{i['port']}": i["name"] for i in capture["instances"]},
    )


@pytest.fixture(scope="module")
def counts(capture: dict[str, Any]) -> dict[str, EjectionCount]:
    records = _records(capture)
    return count_before_ejection(instance_events(_events(capture), records.hosts), records)


# ------------------------------------------------------------------------------------------------ parsing


def test_every_captured_line_parses_with_envoys_fields(capture: dict[str, Any]) -> None:
    events = _events(capture)
    payment = {f"{i['address']}:{i['port']}" for i in capture["instances"] if i["service"] == "payment-service"}
    assert [e.action for e in events].count("EJECT") == 6
    assert [e.action for e in events].count("UNEJECT") == 3
    assert {e.upstream_host for e in events} == payment
    assert all(e.cluster == "outbound|8080||payment-service.platform-core.svc.cluster.local" for e in events)
    assert all(e.kind == "CONSECUTIVE_5XX" for e in events)
    # An EJECT is enforced at maxEjectionPercent 100; Envoy logs UNEJECT with enforced false.
    assert all(e.enforced == (e.action == "EJECT") for e in events)
    # num_ejections is the host's lifetime count: 1 for the first ejection, 2 for the second.
    ejects = [e for e in events if e.action == "EJECT"]
    assert [e.num_ejections for e in ejects] == [1, 1, 1, 2, 2, 2]


def test_timestamps_are_unix_seconds_inside_the_capture_window(capture: dict[str, Any]) -> None:
    start, end = capture["window"]
    events = _events(capture)
    assert all(start - STAMP_RESOLUTION <= e.time <= end for e in events)
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_a_stamp_is_read_to_the_millisecond() -> None:
    line = (
        '{"type":"CONSECUTIVE_5XX","timestamp":"2026-12-03T14:45:21.030Z","cluster_name":"c",'
        '"upstream_url":"127.0.0.1:1","action":"EJECT","num_ejections":1,"enforced":true}'
    )
    event = parse_event(line, "envoy")
    assert event is not None
    assert event.time == pytest.approx(1796309121.030, abs=1e-6)
    assert event.ejects


@pytest.mark.parametrize(
    "line",
    [
        "",
        '{"type":"CONSECUTIVE_5XX","timestamp":"2026-12-03T14:4',  # torn by a flush
        '{"timestamp":"2026-12-03T14:45:21.030Z","upstream_url":"127.0.0.1:1"}',  # no action
        '{"action":"EJECT","upstream_url":"127.0.0.1:1"}',  # no timestamp
        '["EJECT"]',
    ],
)
def test_an_incomplete_line_is_skipped(line: str) -> None:
    assert parse_event(line, "envoy") is None


def test_read_events_keeps_the_window_and_skips_a_torn_line(capture: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "outlier.log"
    path.write_text("\n".join(capture["outlier"]) + '\n{"type":"CONSEC')
    events = _events(capture)
    assert len(list(read_events(path, "envoy", events[0].time, events[-1].time))) == len(events)
    cut = events[3].time + 0.01
    later = [e for e in events if e.time >= cut - STAMP_RESOLUTION]
    assert 0 < len(later) < len(events)
    assert list(read_events(path, "envoy", cut, events[-1].time)) == later
    assert list(read_events(tmp_path / "absent.log", "envoy", 0.0, 1e12)) == []


def test_instance_events_name_the_instance_and_drop_other_hosts(capture: dict[str, Any]) -> None:
    hosts = {f"{i['address']}:{i['port']}": i["name"] for i in capture["instances"]}
    mapped = instance_events(_events(capture), hosts)
    assert {m.instance for m in mapped} == {
        i["name"] for i in capture["instances"] if i["service"] == "payment-service"
    }
    one = next(iter(hosts.items()))
    assert all(m.instance == one[1] for m in instance_events(_events(capture), dict([one])))


# ------------------------------------------------------------------------------------------------ the split


def test_every_instance_served_exactly_3_errors_before_its_first_ejection(counts: dict[str, EjectionCount]) -> None:
    assert len(counts) == 3
    assert {c.errors_before for c in counts.values()} == {3}
    assert {c.attempts_before for c in counts.values()} == {3}


def test_the_first_ejection_reached_the_worker_and_the_later_ones_lagged(
    capture: dict[str, Any], counts: dict[str, EjectionCount]
) -> None:
    """The capture's instance-side view: what an instance count alone would have reported."""
    first, *later = sorted(counts.values(), key=lambda c: c.ejected_at)
    assert first.dispatched_after == ()
    # Envoy's update merge window held the later ejections back from the worker: it kept dispatching to them.
    assert all(len(c.dispatched_after) > 0 for c in later)
    assert all(c.returned_at is not None and c.returned_at > c.ejected_at for c in counts.values())
    for c in counts.values():
        assert all(c.ejected_at + STAMP_RESOLUTION <= t < (c.returned_at or 0.0) for t in c.dispatched_after)
    records = _records(capture)
    address = {v: k for k, v in records.hosts.items()}
    for c in counts.values():
        served = [r for r in records.records if r.upstream_host == address[c.instance] and r.start < c.returned_at]  # type: ignore[operator]
        # Nothing is lost between the two sides of the split.
        assert len(served) == c.attempts_before + len(c.dispatched_after)


def test_an_attempt_after_the_ejection_is_not_counted_even_in_the_millisecond_after(
    capture: dict[str, Any], counts: dict[str, EjectionCount]
) -> None:
    """Move one post-ejection attempt to 1 ms after the stamp: it stays out; to the stamp's own ms: it counts."""
    records = _records(capture)
    late = next(c for c in counts.values() if c.dispatched_after)
    address = {v: k for k, v in records.hosts.items()}[late.instance]
    target = next(r for r in records.records if r.upstream_host == address and r.start == late.dispatched_after[0])

    def moved(to: float) -> EjectionCount:
        from dataclasses import replace

        shifted = tuple(replace(r, start=to) if r is target else r for r in records.records)
        data = AttemptRecords(shifted, records.client, records.pods, records.hosts)
        return count_before_ejection(instance_events(_events(capture), records.hosts), data)[late.instance]

    assert moved(late.ejected_at + STAMP_RESOLUTION).errors_before == 3
    inside = moved(late.ejected_at + STAMP_RESOLUTION / 2)
    assert inside.errors_before == 4
    assert inside.same_millisecond >= 1


def test_an_instance_never_ejected_is_absent_and_a_non_enforced_eject_does_not_count(
    capture: dict[str, Any],
) -> None:
    records = _records(capture)
    events = instance_events(_events(capture), records.hosts)
    first = events[0]
    unenforced = InstanceEvent(first.instance, OutlierEvent(**{**first.event.__dict__, "enforced": False}))
    only = [unenforced]
    assert count_before_ejection(only, records) == {}
    assert first.instance in count_before_ejection([first], records)


def test_a_success_before_the_ejection_is_an_attempt_not_an_error(
    capture: dict[str, Any], counts: dict[str, EjectionCount]
) -> None:
    from dataclasses import replace

    records = _records(capture)
    first = min(counts.values(), key=lambda c: c.ejected_at)
    address = {v: k for k, v in records.hosts.items()}[first.instance]
    earliest = min((r for r in records.records if r.upstream_host == address), key=lambda r: r.start)
    data = AttemptRecords(
        tuple(replace(r, status=200) if r is earliest else r for r in records.records),
        records.client,
        records.pods,
        records.hosts,
    )
    again = count_before_ejection(instance_events(_events(capture), records.hosts), data)[first.instance]
    assert (again.errors_before, again.attempts_before) == (2, 3)


def test_describe_names_the_instance_the_count_and_the_late_attempts(counts: dict[str, EjectionCount]) -> None:
    late = next(c for c in counts.values() if c.dispatched_after)
    text = late.describe()
    assert late.instance in text
    assert "3 errors before envoy ejected it" in text
    assert f"{len(late.dispatched_after)} attempts dispatched after the ejection (+" in text


# ------------------------------------------------------------------------------------------------ the check's count


class _Scenario:
    """Stands in for a Scenario: only ``errors_before_ejection`` is read."""

    def __init__(self, counts: dict[str, EjectionCount] | None) -> None:
        self.counts = counts

    def errors_before_ejection(self, service: str) -> dict[str, EjectionCount] | None:
        return self.counts


def _proof(served: dict[str, int]) -> list[Any]:
    from pytest_meshcheck.harness.chaos import InstanceProof

    return [InstanceProof(instance=name, served=n, injected=n) for name, n in served.items()]


def test_the_check_counts_from_envoys_logs_in_ejection_order(counts: dict[str, EjectionCount]) -> None:
    from pytest_meshcheck.harness.verify import fewest_errors_before_ejection

    # At the instances the later-ejected ones served far more than 3 (the attempts sent after their ejection).
    served = {c.instance: c.attempts_before + len(c.dispatched_after) for c in counts.values()}
    value, detail = fewest_errors_before_ejection(_Scenario(counts), "payment-service", _proof(served), "per instance")  # type: ignore[arg-type]
    first = min(counts.values(), key=lambda c: c.ejected_at)
    assert value == min(c.errors_before for c in counts.values()) == 3
    assert detail.index(first.instance) < min(detail.index(c.instance) for c in counts.values() if c is not first)
    assert "attempts dispatched after the ejection" in detail


def test_a_late_ejection_does_not_stand_for_the_threshold(counts: dict[str, EjectionCount]) -> None:
    from pytest_meshcheck.harness.verify import fewest_errors_before_ejection

    # The flake-bench case: the main thread ejected the first instance only after a 4th error had come back.
    first = min(counts.values(), key=lambda c: c.ejected_at)
    late = {**counts, first.instance: replace(first, errors_before=4, attempts_before=4)}
    served = {c.instance: c.attempts_before + len(c.dispatched_after) for c in late.values()}
    value, detail = fewest_errors_before_ejection(_Scenario(late), "payment-service", _proof(served), "per instance")  # type: ignore[arg-type]
    assert value == 3
    assert "4 errors before envoy ejected it" in detail
    # Late at every instance: the check sees 4 and fails, as it does for a policy that ejects after 4.
    all_late = {i: replace(c, errors_before=4, attempts_before=4) for i, c in counts.items()}
    value, _ = fewest_errors_before_ejection(_Scenario(all_late), "payment-service", _proof(served), "per instance")  # type: ignore[arg-type]
    assert value == 4


def test_without_an_event_log_the_check_counts_at_the_instances_and_says_so() -> None:
    from pytest_meshcheck.harness.verify import fewest_errors_before_ejection

    value, detail = fewest_errors_before_ejection(_Scenario(None), "s", _proof({"a": 4, "b": 9}), "per instance")  # type: ignore[arg-type]
    assert value == 4
    assert "no outlier event log" in detail


def test_without_an_ejection_the_count_is_zero(counts: dict[str, EjectionCount]) -> None:
    from pytest_meshcheck.harness.verify import fewest_errors_before_ejection

    # An ejection of an instance that was not faulted does not stand for the faulted ones. 0, not its 40 errors:
    # a fault limited to N errors leaves exactly N at an instance that is never ejected.
    value, detail = fewest_errors_before_ejection(_Scenario(counts), "s", _proof({"other-0": 40}), "per instance")  # type: ignore[arg-type]
    assert value == 0
    assert "no ejection of a faulted instance" in detail
