"""The replica's counters and chaos state in the Prometheus text exposition format (``GET /metrics``)."""

from __future__ import annotations

import dataclasses

from pytest_meshcheck.workload.echo.chaos import Chaos
from pytest_meshcheck.workload.echo.overrides import OVERRIDES
from pytest_meshcheck.workload.echo.replica import FAULTS, Counters, Identity


def escape_label_value(value: str) -> str:
    """Escape a label value for the Prometheus text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(base: dict[str, str], **extra: str) -> str:
    merged = {**base, **extra}
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in merged.items()) + "}"


def metrics_text(identity: Identity, counters: Counters, chaos: Chaos, generation: int) -> str:
    """Body of ``GET /metrics`` in the Prometheus text exposition format 0.0.4."""
    c = counters
    base: dict[str, str] = dataclasses.asdict(identity)
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(
            f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
            for labels, value in samples
        )

    family(
        "meshcheck_echo_requests_received_total",
        "counter",
        "Requests read on the serving port, before any fault.",
        [(_labels(base), c.received)],
    )
    family(
        "meshcheck_echo_requests_total",
        "counter",
        "Responses sent on the serving port, by status code (resets are not responses).",
        [(_labels(base, code=str(k)), v) for k, v in sorted(c.by_status.items())],
    )
    family(
        "meshcheck_echo_faults_injected_total",
        "counter",
        "Chaos faults injected, by kind.",
        [(_labels(base, fault=k), c.faults[k]) for k in FAULTS],
    )
    family(
        "meshcheck_echo_query_overrides_total",
        "counter",
        "Requests that used a query override, by override.",
        [(_labels(base, override=k), c.overrides[k]) for k in OVERRIDES],
    )
    family(
        "meshcheck_echo_requests_abandoned_total",
        "counter",
        "Delayed requests whose connection closed before the response was sent.",
        [(_labels(base), c.abandoned)],
    )
    family(
        "meshcheck_echo_connections_total",
        "counter",
        "Connections accepted on the serving port.",
        [(_labels(base), c.connections)],
    )
    active = chaos.active()
    family(
        "meshcheck_echo_chaos_active",
        "gauge",
        "1 while the chaos fault is configured with a probability above 0.",
        [(_labels(base, fault=k), 1 if active[k] > 0.0 else 0) for k in FAULTS],
    )
    family(
        "meshcheck_echo_chaos_probability",
        "gauge",
        "Configured probability of each chaos fault.",
        [(_labels(base, fault=k), float(active[k])) for k in FAULTS],
    )
    family(
        "meshcheck_echo_chaos_generation",
        "gauge",
        "Increments on every chaos change (PUT or DELETE /chaos).",
        [(_labels(base), generation)],
    )
    return "\n".join(out) + "\n"
