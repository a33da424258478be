"""Chaos and load inputs validate themselves; reasons and outcomes render for people."""

from __future__ import annotations

import pytest

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect import DestinationFault, Load, Outcome, Reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "boom"}, "kind='boom' is unknown"),
        ({"kind": "error", "rate": 1.5}, "rate=1.5 is not a fraction"),
        ({"kind": "error", "rate": -0.1}, "rate=-0.1 is not a fraction"),
        ({"kind": "error", "status": 99}, "status=99 is not an HTTP status"),
        ({"kind": "latency"}, "delay=0.0 must be a positive number of seconds"),
        ({"kind": "reset", "instances": 0}, "instances=0 must be at least 1"),
    ],
)
def test_destination_fault_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MeshcheckError, match=message):
        DestinationFault(**kwargs)  # type: ignore[arg-type]


def test_destination_fault_scope_and_description() -> None:
    fault = DestinationFault("error", 0.5, 503, instances=2)
    assert fault.affected(3) == 2
    assert fault.affected(1) == 1
    assert DestinationFault("reset").affected(4) == 4
    assert fault.describe() == "HTTP 503 on 50 % of requests at 2 instance(s)"


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"concurrency": True}, {"rate": 0.0}, {"rate": float("inf")}])
def test_load_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(MeshcheckError, match="Load"):
        Load(**kwargs)  # type: ignore[arg-type]


def test_reason_renders_location_source_field_value_and_effect() -> None:
    r = Reason("spec.http[0].timeout", "10s", "bounds the request", "VirtualService ns/vs", "vs.yaml:9")
    assert str(r) == "vs.yaml:9 VirtualService ns/vs spec.http[0].timeout = 10s: bounds the request"
    d = Reason(None, "10 %", "nothing ejected", "Envoy default max_ejection_percent 10")
    assert d.is_default
    assert str(d) == "Envoy default max_ejection_percent 10 = 10 %: nothing ejected"


def test_outcome_ok_means_an_upstream_2xx() -> None:
    assert Outcome(200).ok
    assert not Outcome(503, "URX").ok
    assert not Outcome(200, "FI", "grpc-status UNAVAILABLE").ok
    assert str(Outcome(504, "URX,UT")) == "504 URX,UT"
