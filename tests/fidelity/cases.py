"""One fidelity example: a policy, destination faults, a load and an Istio version, as plain data.

A :class:`Case` is what hypothesis draws, what the runner executes and what a found counterexample is
saved as (``found/*.yaml``). It holds the policy as two plain mappings (the VirtualService ``http[0]``
extras and the DestinationRule ``trafficPolicy``) so that a saved case is readable YAML and shrinks to
the fields that matter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pytest_meshcheck.expect import DestinationFault, Load
from pytest_meshcheck.load import ClosedLoop, OpenLoop
from pytest_meshcheck.policy import PolicySet, load_policy_text
from pytest_meshcheck.topology import Topology, parse_topology

SERVICE = "leaf"
NAMESPACE = "fidelity"
REPLICAS = 3
TOPOLOGY_DATA: dict[str, Any] = {
    "namespace": NAMESPACE,
    "services": [{"name": SERVICE, "versions": [{"name": "v1", "replicas": REPLICAS}]}],
}


def topology() -> Topology:
    """One leaf service with three replicas and no calls: the mesh every example runs on."""
    return parse_topology(TOPOLOGY_DATA, source="<fidelity topology>")


@dataclass(frozen=True)
class FaultSpec:
    """A destination fault as the echo workloads inject it.

    Attributes:
        kind: ``error``, ``latency`` or ``reset``.
        rate: Probability per request at an affected instance.
        status: HTTP status of an ``error``.
        delay: Seconds of a ``latency`` fault.
        instances: The first ``instances`` replicas in topology order, or ``None`` for all.
    """

    kind: str
    rate: float
    status: int = 503
    delay: float = 0.0
    instances: int | None = None

    def model(self) -> DestinationFault:
        """The model's view of this fault."""
        return DestinationFault(self.kind, self.rate, self.status, self.delay, self.instances)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoadSpec:
    """Closed loop (``concurrency``) or open loop (``rate`` per second); the request count is planned."""

    kind: str
    concurrency: int = 1
    rate: float = 0.0

    def profile(self, requests: int) -> ClosedLoop | OpenLoop:
        """The load engine's profile for ``requests`` requests."""
        if self.kind == "closed":
            return ClosedLoop(self.concurrency, duration=120.0, max_requests=requests)
        # The schedule holds exactly ``requests`` arrivals; +1 s so the last one is due before the end.
        return OpenLoop(self.rate, duration=requests / self.rate + 1.0, max_requests=requests)

    def model(self, mean_seconds: float) -> Load:
        """The model's load: an open loop keeps about ``rate x latency`` requests in flight (at least 2)."""
        if self.kind == "closed":
            return Load(concurrency=self.concurrency)
        return Load(concurrency=max(2, round(self.rate * mean_seconds)), rate=self.rate)


@dataclass(frozen=True)
class Case:
    """One example.

    Attributes:
        istio: Istio minor release whose translation the mesh follows and the model assumes.
        route: Extra fields of the VirtualService's only ``http`` route (``retries``, ``timeout``,
            ``fault``); empty for no VirtualService at all.
        traffic_policy: The DestinationRule's ``trafficPolicy``; empty for no DestinationRule.
        faults: Destination faults.
        load: The load.
    """

    istio: str
    route: dict[str, Any] = field(default_factory=dict)
    traffic_policy: dict[str, Any] = field(default_factory=dict)
    faults: tuple[FaultSpec, ...] = ()
    load: LoadSpec = LoadSpec("closed", concurrency=4)
    has_vs: bool = True

    def policy_yaml(self) -> str:
        """The VirtualService and DestinationRule of this case, as YAML documents."""
        docs: list[dict[str, Any]] = []
        if self.has_vs:
            route: dict[str, Any] = {"route": [{"destination": {"host": SERVICE}}], **self.route}
            docs.append(
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": {"name": "fidelity", "namespace": NAMESPACE},
                    "spec": {"hosts": [SERVICE], "http": [route]},
                }
            )
        if self.traffic_policy:
            docs.append(
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "DestinationRule",
                    "metadata": {"name": "fidelity", "namespace": NAMESPACE},
                    "spec": {"host": SERVICE, "trafficPolicy": self.traffic_policy},
                }
            )
        return yaml.safe_dump_all(docs, sort_keys=False) if docs else ""

    def policies(self) -> PolicySet:
        """The case's policies, loaded and validated as Istio's admission does."""
        text = self.policy_yaml()
        return load_policy_text(text, source="<fidelity case>") if text else PolicySet()

    def to_data(self) -> dict[str, Any]:
        """Plain data for a ``found/*.yaml`` file."""
        data = asdict(self)
        data["faults"] = [asdict(f) for f in self.faults]
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Case:
        """Rebuild a case from :meth:`to_data` output."""
        return cls(
            istio=str(data["istio"]),
            route=dict(data.get("route") or {}),
            traffic_policy=dict(data.get("traffic_policy") or {}),
            faults=tuple(FaultSpec(**f) for f in data.get("faults") or ()),
            load=LoadSpec(**data["load"]),
            has_vs=bool(data.get("has_vs", True)),
        )


def save_found(directory: Path, case: Case, failures: list[str], seed: object) -> Path:
    """Write a counterexample as ``found/<digest>.yaml``, to be judged and kept as a regression case."""
    import hashlib

    data = case.to_data()
    digest = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:12]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest}.yaml"
    doc = {
        "case": data,
        "policy_yaml": case.policy_yaml(),
        "failed_checks": failures,
        "seed": str(seed),
        # Filled in by whoever judges it: model bug, translation bug or Envoy/Istio fact.
        "judgement": "unjudged",
        "status": "open",
        "root_cause": "",
    }
    path.write_text(yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False, width=120))
    return path


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings (the policy YAML) as literal blocks, so a found file reads like a policy."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)
