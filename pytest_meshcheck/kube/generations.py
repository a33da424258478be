"""Policies in a cluster, one generation per change, each applied until the caller's sidecar runs it.

Every change (apply, remove, replace) creates the new policies as fresh objects ``<name>-g<N>``, then
deletes the previous generation, then waits until the caller's sidecar reports routes and clusters built
from the new objects and none from the deleted ones (:mod:`pytest_meshcheck.kube.converge`). Creating
before deleting means there is never a moment without the policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.client import KubeClient
from pytest_meshcheck.kube.converge import ObjectKey, SidecarView, pending, reaches_caller
from pytest_meshcheck.kube.manifests import policy_manifest
from pytest_meshcheck.kube.rewrite import HostRewriter, rewrite_policies
from pytest_meshcheck.kube.settings import KubeSettings
from pytest_meshcheck.kube.wait import wait_until
from pytest_meshcheck.policy.model import DestinationRule, Policy, PolicySet, VirtualService
from pytest_meshcheck.topology import Topology

PolicyKey = tuple[str, str, str]


def policy_key(p: Policy) -> PolicyKey:
    """``(kind, namespace, name)`` of a policy."""
    return (p.kind, p.namespace or "", p.name)


def all_policies(policies: PolicySet) -> list[Policy]:
    """VirtualServices, then DestinationRules."""
    return [*policies.virtual_services, *policies.destination_rules]


class PolicyGenerations:
    """The policies a run has in force in its namespace.

    Args:
        settings: The run's settings (namespace, labels, convergence time-out).
        hosts: Rewrites the user's hosts and namespaces into the run namespace.
        topology: The run's topology (services in the run namespace).
        caller_labels: Labels of the caller's pod (for DestinationRule workload selectors).
        client: Returns the cluster's client (raises when the run is not started).
        view: Returns what the caller's sidecar runs now.
    """

    def __init__(
        self,
        settings: KubeSettings,
        hosts: HostRewriter,
        topology: Topology,
        caller_labels: Mapping[str, str],
        client: Callable[[], KubeClient],
        view: Callable[[], SidecarView],
    ) -> None:
        self.settings = settings
        self.hosts = hosts
        self.topology = topology
        self.caller_labels = dict(caller_labels)
        self._client = client
        self._view = view
        self.applied: dict[PolicyKey, tuple[Policy, dict[str, Any]]] = {}
        self.generation = 0

    @property
    def policies(self) -> PolicySet:
        """The policies in force, as they run in the cluster (namespaces and hosts rewritten)."""
        items = [p for p, _ in self.applied.values()]
        return PolicySet(
            tuple(p for p in items if isinstance(p, VirtualService)),
            tuple(p for p in items if isinstance(p, DestinationRule)),
        )

    def keys(self, policies: PolicySet | Iterable[tuple[str, str, str]]) -> list[PolicyKey]:
        """Keys in the run namespace of policies, or of ``(kind, namespace, name)`` triples."""
        if isinstance(policies, PolicySet):
            return [policy_key(p) for p in all_policies(rewrite_policies(policies, self.hosts))]
        return [(kind, self.settings.namespace, name) for kind, _ns, name in policies]

    def change(self, policies: PolicySet, *, remove: Iterable[PolicyKey] = (), replace: bool = False) -> float:
        """Create ``policies`` as the next generation, delete what they replace, and wait for the sidecar.

        ``remove`` names further policies to delete; ``replace`` deletes every policy not in ``policies``.

        Returns:
            Seconds from the first API call until the sidecar ran the change.

        Raises:
            PolicyError: A policy has no YAML text (nothing was changed).
            MeshSetupError: The API server refused an object (what this change created is deleted again).
            MeshTimeoutError: The sidecar did not converge within ``converge_timeout``.
        """
        client = self._client()
        generation = self.generation + 1
        # Every manifest is built first: a policy without YAML fails before the cluster changes.
        new = {
            policy_key(p): (p, policy_manifest(p, self.settings, self.hosts, generation))
            for p in all_policies(rewrite_policies(policies, self.hosts))
        }
        gone = set(remove) | (set(self.applied) - set(new) if replace else set())
        old = [self.applied[k][1] for k in (set(new) | gone) if k in self.applied]
        t0 = time.monotonic()
        created: list[dict[str, Any]] = []
        try:
            for _, manifest in new.values():
                client.create(manifest)
                created.append(manifest)
        except BaseException:
            for manifest in created:
                with contextlib.suppress(MeshSetupError):
                    _delete(client, manifest)
            raise
        self.generation = generation
        for manifest in old:
            _delete(client, manifest)
        for k in gone:
            self.applied.pop(k, None)
        self.applied.update(new)
        present = [ObjectKey.of(m) for _, m in new.values() if reaches_caller(m, self.topology, self.caller_labels)]
        absent = [ObjectKey.of(m) for m in old if reaches_caller(m, self.topology, self.caller_labels)]
        if present or absent:

            def check() -> tuple[bool, object]:
                lines = pending(self._view(), present, absent)
                return not lines, "; ".join(lines)

            wait_until(
                check,
                timeout=self.settings.converge_timeout,
                description=f"the caller's sidecar to run policy generation {generation}",
                fix="istiod may reject or ignore the policy (a second VirtualService for the same host, for one); "
                f"check 'istioctl analyze -n {self.settings.namespace}' and istiod's logs",
            )
        return time.monotonic() - t0


def _delete(client: KubeClient, manifest: Mapping[str, Any]) -> None:
    meta = manifest["metadata"]
    client.delete_custom(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
