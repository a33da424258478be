"""One fault vocabulary: the model's kinds, and the subset the workloads inject themselves."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from pytest_meshcheck.chaos.destination import DestinationChaos
from pytest_meshcheck.chaos.kinds import FAULT_KINDS, INJECTED_KINDS, FaultKind
from pytest_meshcheck.errors import ChaosError
from pytest_meshcheck.workload.echo.chaos import Chaos


def test_fault_kinds_are_the_literal_and_injected_kinds_a_subset() -> None:
    assert FAULT_KINDS == get_args(FaultKind) == ("error", "latency", "reset", "refused")
    assert set(FAULT_KINDS) > INJECTED_KINDS


def test_every_injected_kind_is_a_section_of_the_workload_chaos_document() -> None:
    assert {f.name for f in dataclasses.fields(Chaos)} == INJECTED_KINDS


def test_a_kind_the_workloads_cannot_inject_is_refused_before_any_call() -> None:
    class Target:
        service, name, admin_url = "orders", "orders-0", "http://127.0.0.1:1"

    chaos = DestinationChaos()
    with pytest.raises(ChaosError, match="'refused' is not injected by the workloads"):
        chaos.apply("refused", {}, [Target()])
    assert chaos.active() == {}
