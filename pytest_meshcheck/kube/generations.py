"""Policies in a cluster, one generation per change, each applied until every caller's sidecar runs it.

Every change (apply, remove, replace) creates the new policies as fresh objects ``<name>-g<N>``, then
deletes the previous generation, then waits until the agent's sidecar and the sidecar of every pod that
makes calls report routes and clusters built from the new objects and none from the deleted ones
(:mod:`pytest_meshcheck.kube.converge`). Creating before deleting means there is never a moment without
the policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.client import KubeClient
from pytest_meshcheck.kube.converge import Proxy, proxy_pending
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
        client: Returns the cluster's client (raises when the run is not started).
        proxies: Returns the sidecars a change must reach: the agent's, then those of the calling pods.
    """

    def __init__(
        self,
        settings: KubeSettings,
        hosts: HostRewriter,
        topology: Topology,
        client: Callable[[], KubeClient],
        proxies: Callable[[], Sequence[Proxy]],
    ) -> None:
        self.settings = settings
        self.hosts = hosts
        self.topology = topology
        self._client = client
        self._proxies = proxies
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
        """Create ``policies`` as the next generation, delete what they replace, and wait for the sidecars.

        ``remove`` names further policies to delete; ``replace`` deletes every policy not in ``policies``.

        Returns:
            Seconds from the first API call until every caller's sidecar ran the change.

        Raises:
            PolicyError: A policy has no YAML text (nothing was changed).
            MeshSetupError: The API server refused an object (what this change created is deleted again).
            MeshTimeoutError: A sidecar did not converge within ``converge_timeout`` (each one still behind
                is named).
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
        created_manifests = [m for _, m in new.values()]
        waiting = list(self._proxies())
        if len(waiting) <= 1:
            where = waiting[0].where if waiting else "the caller's sidecar"
            description = f"{where} to run policy generation {generation}"
        else:
            description = (
                f"the sidecars of the agent and of {len(waiting) - 1} calling pod(s) to run policy generation "
                f"{generation}"
            )

        def check() -> tuple[bool, object]:
            lines: list[str] = []
            for proxy in list(waiting):
                behind = proxy_pending(proxy, self.topology, created_manifests, old)
                if behind:
                    lines += behind
                else:
                    # istiod never takes a pushed generation back, so a proxy that runs it is not read again.
                    waiting.remove(proxy)
            return not lines, "; ".join(lines)

        wait_until(
            check,
            timeout=self.settings.converge_timeout,
            description=description,
            fix="istiod may reject or ignore the policy (a second VirtualService for the same host, for one); "
            f"check 'istioctl analyze -n {self.settings.namespace}', 'istioctl proxy-status' and istiod's logs",
        )
        return time.monotonic() - t0


def _delete(client: KubeClient, manifest: Mapping[str, Any]) -> None:
    meta = manifest["metadata"]
    client.delete_custom(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
