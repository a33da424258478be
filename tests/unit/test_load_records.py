from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from pytest_meshcheck.load.profile import ClosedLoop, OpenLoop
from pytest_meshcheck.load.records import CANCELLED, TIMEOUT, LoadRecord, LoadRecords
from pytest_meshcheck.load.result import LoadResult


def filled(open_loop: bool) -> LoadRecords:
    records = LoadRecords(2, open_loop=open_loop, selected_headers=["Server"])  # grows past capacity 2
    for i in range(6):
        j = records.add(i * 0.01)
        records.sent[j] = i * 0.01 + 0.002
        if i == 3:
            records.set_error(j, 0.5, TIMEOUT)
        elif i == 5:
            records.sent[j] = np.nan
            records.set_error(j, 0.9, CANCELLED)
        else:
            records.set_response(
                j,
                i * 0.01 + 0.012,
                200 if i else 503,
                b"u1" if i % 2 else b"u0",
                b"2" if i == 2 else None,
                i == 0,
                [b"envoy" if i < 2 else None],
            )
    records.trim()
    return records


def test_columns_grow_and_convert_to_dataclasses() -> None:
    records = filled(open_loop=True)
    assert len(records) == 6
    assert records.status.tolist() == [503, 200, 200, 0, 200, 0]
    rows = records.to_list()
    first = rows[0]
    assert isinstance(first, LoadRecord)
    assert (first.index, first.intended, first.status, first.error) == (0, 0.0, 503, None)
    assert (first.sent, first.done, first.latency) == pytest.approx((0.002, 0.012, 0.012))
    assert (first.instance, first.attempt_count, first.overloaded) == ("u0", None, True)
    assert first.headers == {"server": "envoy"}
    assert rows[2].attempt_count == 2
    assert rows[2].headers == {}
    assert rows[3].error == "timeout"
    assert rows[3].status == 0
    assert rows[5].sent is None
    assert rows[5].error == "cancelled"


def test_latency_is_from_intended_in_open_loop_and_from_send_in_closed_loop() -> None:
    open_records, closed_records = filled(open_loop=True), filled(open_loop=False)
    assert open_records.latency[1] == pytest.approx(0.012)
    assert closed_records.latency[1] == pytest.approx(0.010)
    assert closed_records.record(1).latency == pytest.approx(0.010)
    # Never sent: the closed-loop latency falls back to the intended time rather than NaN.
    assert closed_records.latency[5] == pytest.approx(0.9 - 0.05)
    assert not np.isnan(closed_records.latency).any()


def test_state_round_trip_through_pickle() -> None:
    records = filled(open_loop=False)
    again = LoadRecords.from_state(pickle.loads(pickle.dumps(records.to_state())))
    assert again.to_list() == records.to_list()


def test_record_index_out_of_range() -> None:
    with pytest.raises(IndexError, match="out of range"):
        filled(open_loop=True).record(6)


def test_result_summaries() -> None:
    result = LoadResult(OpenLoop(100, 1, 6), filled(open_loop=True), 100.0, 1.7e9, "asyncio")
    assert result.count == 6
    assert result.status_histogram() == {0: 2, 200: 3, 503: 1}
    assert result.error_histogram() == {"timeout": 1, "cancelled": 1}
    assert result.success_count == 3
    assert result.overloaded_count == 1
    assert result.instance_counts() == {"u0": 3, "u1": 1, None: 2}
    assert result.attempt_histogram() == {2: 1, None: 5}
    assert result.latency_percentiles([100], statuses=[200]) == {100: pytest.approx(0.012)}
    assert math.isnan(result.latency_percentiles([50], statuses=[418])[50])
    # 5 sent requests, first at 0.002 and last at 0.042.
    assert result.achieved_rate == pytest.approx(4 / 0.04)
    assert result.elapsed == pytest.approx(0.9)
    assert result.summary()["status"] == {0: 2, 200: 3, 503: 1}
    assert "count=6" in repr(result)


def test_columnar_store_is_compact() -> None:
    records = LoadRecords(100_000, open_loop=False)
    for _ in range(100_000):
        records.set_response(records.add(0.0), 0.001, 200, b"u0", b"1", False)
    records.trim()
    size = sum(
        getattr(records, c).nbytes
        for c in ("intended", "sent", "done", "status", "error", "instance", "attempts", "overloaded")
    )
    assert size <= 100_000 * 40  # 34 bytes a request; a dict per request would be ~1 kB
    assert LoadResult(ClosedLoop(1, 1, 100_000), records, 0.0, 0.0).instance_counts() == {"u0": 100_000}
