"""The replica's counters and chaos state in the Prometheus text exposition format (``GET /metrics``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from pytest_meshcheck.workload.echo.calls import Outbound
from pytest_meshcheck.workload.echo.chaos import Chaos
from pytest_meshcheck.workload.echo.ledger import Ledger
from pytest_meshcheck.workload.echo.overrides import OVERRIDES
from pytest_meshcheck.workload.echo.replica import FAULTS, Counters, Identity


def escape_label_value(value: str) -> str:
    """Escape a label value for the Prometheus text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(base: dict[str, str], **extra: str) -> str:
    merged = {**base, **extra}
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in merged.items()) + "}"


class InstanceView(Protocol):
    """What the exposition reads from one instance (the echo app implements it)."""

    identity: Identity
    counters: Counters
    chaos: Chaos
    generation: int
    outbound: Outbound
    ledger: Ledger


def metrics_text(instances: Sequence[InstanceView]) -> str:
    """Body of ``GET /metrics`` for ``instances`` in the Prometheus text exposition format 0.0.4.

    One family per metric with a sample per instance (labelled by its identity), so a workload host serving
    many instances is one scrape target.
    """
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(
            f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
            for labels, value in samples
        )

    views = [(dataclasses.asdict(i.identity), i) for i in instances]
    family(
        "meshcheck_echo_requests_received_total",
        "counter",
        "Requests read on the serving port, before any fault.",
        [(_labels(base), i.counters.received) for base, i in views],
    )
    family(
        "meshcheck_echo_requests_total",
        "counter",
        "Responses sent on the serving port, by status code (resets are not responses).",
        [(_labels(base, code=str(k)), v) for base, i in views for k, v in sorted(i.counters.by_status.items())],
    )
    family(
        "meshcheck_echo_faults_injected_total",
        "counter",
        "Chaos faults injected, by kind.",
        [(_labels(base, fault=k), i.counters.faults[k]) for base, i in views for k in FAULTS],
    )
    family(
        "meshcheck_echo_query_overrides_total",
        "counter",
        "Requests that used a query override, by override.",
        [(_labels(base, override=k), i.counters.overrides[k]) for base, i in views for k in OVERRIDES],
    )
    family(
        "meshcheck_echo_requests_abandoned_total",
        "counter",
        "Requests whose connection closed before the response was sent (delayed, or waiting on calls).",
        [(_labels(base), i.counters.abandoned) for base, i in views],
    )
    family(
        "meshcheck_echo_connections_total",
        "counter",
        "Connections accepted on the serving port.",
        [(_labels(base), i.counters.connections) for base, i in views],
    )
    family(
        "meshcheck_echo_executions_total",
        "counter",
        "Requests executed: passed chaos and began their work (dependency calls included).",
        [(_labels(base), i.counters.executed) for base, i in views],
    )
    family(
        "meshcheck_echo_calls_total",
        "counter",
        "Dependency calls made through the instance's sidecar.",
        [(_labels(base), i.outbound.calls) for base, i in views],
    )
    family(
        "meshcheck_echo_calls_failed_total",
        "counter",
        "Dependency calls that failed the request (non-2xx or no answer, unless on_error is ignore).",
        [(_labels(base), i.counters.calls_failed) for base, i in views],
    )
    active = [(base, i, i.chaos.active()) for base, i in views]
    family(
        "meshcheck_echo_chaos_active",
        "gauge",
        "1 while the chaos fault is configured with a probability above 0.",
        [(_labels(base, fault=k), 1 if act[k] > 0.0 else 0) for base, _, act in active for k in FAULTS],
    )
    family(
        "meshcheck_echo_chaos_probability",
        "gauge",
        "Configured probability of each chaos fault.",
        [(_labels(base, fault=k), float(act[k])) for base, _, act in active for k in FAULTS],
    )
    family(
        "meshcheck_echo_chaos_generation",
        "gauge",
        "Increments on every chaos change (PUT or DELETE /chaos).",
        [(_labels(base), i.generation) for base, i in views],
    )
    ledgers: dict[str, tuple[dict[str, str], Ledger]] = {}
    for base, i in views:
        ledgers.setdefault(f"{base['namespace']}/{base['service']}", (base, i.ledger))
    family(
        "meshcheck_echo_duplicate_executions_total",
        "counter",
        "Executions of a request id the service had already executed (its ledger; per pod in a cluster).",
        [
            (_labels({"service": b["service"], "namespace": b["namespace"]}), ledger.duplicate_executions)
            for b, ledger in ledgers.values()
        ],
    )
    return "\n".join(out) + "\n"
