"""The workload host's instance list: the JSON file ``echo.py --host-spec FILE`` reads.

``{"instances": [{"service": "order-service", "version": "v1", "instance": "order-service-v1-0",
"namespace": "platform-core", "seed": 7, "calls": [...]}, ...]}``; ``port`` (default 0, any free port),
``host`` (default ``127.0.0.1``), ``seed`` (default random), ``calls`` (the ``--calls`` list) and ``outbound``
(``"HOST:PORT"``; usually set later with ``PUT /outbound``) are optional.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_meshcheck.workload.echo.calls import CallSpec, calls_json, parse_calls
from pytest_meshcheck.workload.echo.replica import Identity


@dataclass(frozen=True)
class InstanceSpec:
    """One instance the process serves: who it is, where it listens and what it calls."""

    identity: Identity
    host: str = "127.0.0.1"
    port: int = 0
    seed: int | None = None
    calls: tuple[CallSpec, ...] = ()
    outbound: tuple[str, int] | None = None


@dataclass(frozen=True)
class HostSpec:
    """Every instance of one process; ``single`` is a pod's one instance, with its admin API at the root."""

    instances: tuple[InstanceSpec, ...]
    single: bool = False


def host_spec_json(instances: list[InstanceSpec]) -> str:
    """The file :func:`load_host_spec` reads, for ``instances``."""
    docs = []
    for inst in instances:
        doc: dict[str, Any] = {
            "service": inst.identity.service,
            "version": inst.identity.version,
            "instance": inst.identity.instance,
            "namespace": inst.identity.namespace,
            "host": inst.host,
            "port": inst.port,
            "calls": json.loads(calls_json(inst.calls)),
        }
        if inst.seed is not None:
            doc["seed"] = inst.seed
        if inst.outbound is not None:
            doc["outbound"] = f"{inst.outbound[0]}:{inst.outbound[1]}"
        docs.append(doc)
    return json.dumps({"instances": docs}, indent=1)


def _text(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ValueError(f"{where}.{key}: required, non-empty printable text")
    return value


def parse_host_spec(doc: Any, source: str) -> HostSpec:
    """Validate a decoded host spec.

    Raises:
        ValueError: Naming the file and the entry at fault.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list) or not doc["instances"]:
        raise ValueError(f"{source}: expected {{'instances': [...]}} with at least one instance")
    out: list[InstanceSpec] = []
    names: set[str] = set()
    for i, item in enumerate(doc["instances"]):
        where = f"{source}: instances[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        unknown = set(item) - {
            "service",
            "version",
            "instance",
            "namespace",
            "host",
            "port",
            "seed",
            "calls",
            "outbound",
        }
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        identity = Identity(*(_text(item, k, where) for k in ("service", "version", "instance", "namespace")))
        if identity.instance in names:
            raise ValueError(f"{where}.instance: duplicate instance {identity.instance!r}")
        names.add(identity.instance)
        port, seed = item.get("port", 0), item.get("seed")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"{where}.port: must be an integer 0-65535")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"{where}.seed: must be an integer")
        try:
            calls = parse_calls(json.dumps(item.get("calls", [])))
        except ValueError as exc:
            raise ValueError(f"{where}.calls{exc}") from None
        outbound = None
        if item.get("outbound") is not None:
            host, sep, oport = str(item["outbound"]).rpartition(":")
            if not sep or not oport.isdigit():
                raise ValueError(f"{where}.outbound: must be HOST:PORT")
            outbound = (host, int(oport))
        out.append(InstanceSpec(identity, str(item.get("host", "127.0.0.1")), port, seed, calls, outbound))
    return HostSpec(tuple(out))


def load_host_spec(path: str | Path) -> HostSpec:
    """Read and validate a host spec file.

    Raises:
        ValueError: The file is unreadable, not JSON, or invalid.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    return parse_host_spec(doc, str(path))
