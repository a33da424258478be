"""The echo's dependency-call specs, host specs and execution ledger: parsing and bookkeeping."""

from __future__ import annotations

import json
import re

import pytest

from pytest_meshcheck.workload.echo.calls import CallSpec, calls_json, parse_calls
from pytest_meshcheck.workload.echo.host_spec import InstanceSpec, host_spec_json, parse_host_spec
from pytest_meshcheck.workload.echo.ledger import Ledger
from pytest_meshcheck.workload.echo.replica import Identity


def test_calls_round_trip() -> None:
    calls = (
        CallSpec("pay", "pay.ns.svc.cluster.local:8080", "POST", "/pay"),
        CallSpec("inv", "inv:80", "GET", "/", 503),
    )
    assert parse_calls(calls_json(calls)) == calls


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("{}", "must be a JSON list"),
        ('[{"service": "a", "authority": "a", "method": "GET", "path": "/"}]', "[0].authority: must be host:port"),
        ('[{"service": "a", "authority": "a:1", "method": "GET", "path": "x"}]', "[0].path: must start with '/'"),
        ('[{"service": "a", "authority": "a:1", "method": "GET", "path": "/", "on_error": "retry"}]', "[0].on_error"),
        ('[{"service": "a", "authority": "a:1", "method": "GET", "path": "/", "x": 1}]', "unknown field(s) ['x']"),
    ],
)
def test_bad_calls_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_calls(text)


def test_host_spec_round_trip_and_duplicates() -> None:
    inst = InstanceSpec(
        Identity("a", "v1", "a-0", "ns"), seed=5, calls=(CallSpec("b", "b:1", "GET", "/"),), outbound=("127.0.0.1", 9)
    )
    spec = parse_host_spec(json.loads(host_spec_json([inst])), "s.json")
    assert spec.instances == (inst,)
    with pytest.raises(ValueError, match=r"s.json: instances\[1\].instance: duplicate instance 'a-0'"):
        parse_host_spec(json.loads(host_spec_json([inst, inst])), "s.json")


def test_ledger_counts_repeats_and_duplicates_and_stays_bounded() -> None:
    ledger = Ledger(capacity=2)
    for rid in (b"r1", b"r1", b"r2"):
        ledger.attempt(rid)
    ledger.execute(b"r1")
    ledger.execute(b"r1")
    assert ledger.counts() == {"r1": [2, 2], "r2": [1, 0]}
    assert ledger.counts(since=ledger.summary()["seq"] - 2) == {"r1": [2, 2]}  # changed by the last two
    assert ledger.summary()["repeat_attempts"] == 1
    assert ledger.summary()["duplicate_executions"] == 1
    ledger.attempt(b"r3")  # the oldest id is forgotten
    assert set(ledger.counts()) == {"r2", "r3"}
    assert ledger.summary()["forgotten"] == 1
    ledger.attempt(None)  # no id: counted, never remembered
    assert ledger.summary()["attempts"] == 5
