from __future__ import annotations

import pickle
import re

import pytest

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.load.profile import ClosedLoop, LoadError, OpenLoop, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (2, 2.0),
        (0.25, 0.25),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1.5m", 90.0),
        ("1m30s", 90.0),
        (".5s", 0.5),
        ("1h", 3600.0),
    ],
)
def test_parse_duration_accepts(value: float | str, seconds: float) -> None:
    assert parse_duration(value, field="X.duration") == pytest.approx(seconds)


# Strings are Go durations, as in Istio YAML: a bare number or a space is not one.
@pytest.mark.parametrize(
    "value", [0, -1, "0s", "abc", "", "3", " 10 s ", "-2s", float("inf"), float("nan"), True, None, "1e3s"]
)
def test_parse_duration_rejects_and_names_field(value: object) -> None:
    with pytest.raises(LoadError, match=r"^X\.duration: "):
        parse_duration(value, field="X.duration")  # type: ignore[arg-type]


def test_open_loop_normalises() -> None:
    profile = OpenLoop(rate=200, duration="1500ms", max_requests=1000)
    assert profile.rate == 200.0
    assert isinstance(profile.rate, float)
    assert profile.duration == 1.5
    assert profile.max_connections == 256
    assert profile == OpenLoop(200.0, 1.5, 1000)
    assert "rate=200.0" in repr(profile)


@pytest.mark.parametrize(
    ("rate", "duration", "max_requests", "planned"),
    [(200, 1, 1000, 200), (200, 1, 50, 50), (3, 1, 100, 3), (3, 1.1, 100, 4), (1000, 0.0015, 100, 2)],
)
def test_open_loop_planned_requests(rate: float, duration: float, max_requests: int, planned: int) -> None:
    # Request i is due at i / rate; only those due strictly before `duration` are planned.
    assert OpenLoop(rate, duration, max_requests).planned_requests == planned


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0}, "OpenLoop.rate"),
        ({"rate": -5}, "OpenLoop.rate"),
        ({"rate": float("inf")}, "OpenLoop.rate"),
        ({"rate": "100"}, "OpenLoop.rate"),
        ({"rate": True}, "OpenLoop.rate"),
        ({"duration": 0}, "OpenLoop.duration"),
        ({"duration": "forever"}, "OpenLoop.duration"),
        ({"max_requests": 0}, "OpenLoop.max_requests"),
        ({"max_requests": 10.0}, "OpenLoop.max_requests"),
        ({"max_requests": None}, "OpenLoop.max_requests"),
        ({"max_connections": 0}, "OpenLoop.max_connections"),
    ],
)
def test_open_loop_rejects(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"rate": 100, "duration": 1, "max_requests": 100, **kwargs}
    with pytest.raises(LoadError, match="^" + re.escape(field) + ": "):
        OpenLoop(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"concurrency": 0}, "ClosedLoop.concurrency"),
        ({"concurrency": 2.5}, "ClosedLoop.concurrency"),
        ({"concurrency": False}, "ClosedLoop.concurrency"),
        ({"duration": -1}, "ClosedLoop.duration"),
        ({"duration": "1 hour"}, "ClosedLoop.duration"),
        ({"max_requests": -1}, "ClosedLoop.max_requests"),
    ],
)
def test_closed_loop_rejects(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"concurrency": 4, "duration": 1, "max_requests": 100, **kwargs}
    with pytest.raises(LoadError, match="^" + re.escape(field) + ": "):
        ClosedLoop(**args)  # type: ignore[arg-type]


def test_both_bounds_are_required() -> None:
    with pytest.raises(TypeError):
        ClosedLoop(concurrency=4, duration=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        OpenLoop(rate=10, max_requests=10)  # type: ignore[call-arg]


def test_load_error_is_a_meshcheck_error_and_a_value_error() -> None:
    with pytest.raises(MeshcheckError):
        ClosedLoop(0, 1, 1)
    with pytest.raises(ValueError, match="greater than 0"):
        ClosedLoop(0, 1, 1)


def test_profiles_are_frozen_and_picklable() -> None:
    profile = ClosedLoop(concurrency=4, duration="2s", max_requests=100)
    with pytest.raises(AttributeError):
        profile.concurrency = 5  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(profile)) == profile
    open_loop = OpenLoop(5, 1, 5, max_connections=3)
    assert pickle.loads(pickle.dumps(open_loop)) == open_loop
