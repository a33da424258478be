"""Timings split a scenario's wall time into kinds exclusively: nested work counts once, for the innermost kind."""

from __future__ import annotations

import pytest

from pytest_meshcheck.harness import timing
from pytest_meshcheck.harness.timing import Timings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(timing.time, "monotonic", c)
    return c


def test_nested_measures_are_counted_once_for_the_innermost_kind(clock: Clock) -> None:
    t = Timings()
    with t.measure("outer"):
        clock.now += 1.0
        with t.measure("inner"):
            clock.now += 2.0
            with t.measure("innermost"):
                clock.now += 4.0
        t.add("traffic", 8.0)  # measured elsewhere, inside this block
        clock.now += 8.0 + 16.0
    assert t.as_dict() == {"innermost": 4.0, "inner": 2.0, "traffic": 8.0, "outer": 17.0}
    assert sum(t.seconds.values()) == 31.0  # every second of the wall time, once


def test_an_absorbing_measure_keeps_its_nested_work(clock: Clock) -> None:
    t = Timings()
    with t.measure("gauge wait", absorb=True):
        for _ in range(3):
            with t.measure("scrape"):
                clock.now += 0.5
        t.add("traffic", 1.0)
    assert t.as_dict() == {"gauge wait": 1.5}


def test_a_fixed_sleep_is_named_by_its_reason(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr(timing.time, "sleep", fake_sleep)
    t = Timings()
    t.sleep(1.0, "Envoy's ejection merge window")
    ((kind, seconds),) = t.as_dict().items()
    assert "Envoy's ejection merge window" in kind
    assert seconds == 1.0
