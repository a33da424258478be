"""``--mesh-dry-run``: the full plan of a cluster run, printed without a cluster or a kubeconfig.

The plan is the list of checks the run would make, in order, the call graph the echo workloads run
(each caller's calls, in order, as its Deployments pass them with ``--calls``), then every object it
would create, as YAML documents in creation order. ConfigMap files are shown as a one-line digest unless
``full_files`` (they are the package's own files, byte for byte).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import yaml

from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.kube.client import kubeconfig_paths
from pytest_meshcheck.kube.manifests import (
    AGENT_CONFIGMAP,
    AGENT_NAME,
    AGENT_PORT,
    ECHO_ADMIN_PORT,
    PROXY_STATS_MATCHER,
    Manifest,
    calls_argument,
    check_topology_ports,
    echo_deployment_name,
    namespace_manifest,
    object_ref,
    policy_manifest,
    run_namespace_of,
    workload_manifests,
)
from pytest_meshcheck.kube.preflight import PERMISSIONS, REQUIRED_STATS
from pytest_meshcheck.kube.rewrite import HostRewriter, rewrite_topology
from pytest_meshcheck.kube.settings import MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL, KubeSettings
from pytest_meshcheck.policy.model import Policy, PolicySet
from pytest_meshcheck.topology import Topology
from pytest_meshcheck.workload.bundle import AGENT_FILES, ECHO_FILES


def _abbreviate(manifest: Manifest) -> Manifest:
    if manifest.get("kind") != "ConfigMap":
        return manifest
    files = {f.key: f for f in (*ECHO_FILES, *AGENT_FILES)}
    data = {}
    for key, text in manifest["data"].items():
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        origin = f"pytest_meshcheck/{files[key].source}" if key in files and files[key].source else "generated"
        data[key] = f"<{len(text.encode())} bytes, sha256 {digest}..., from {origin}; mounted as {files[key].path}>"
    return {**manifest, "data": data}


def plan_objects(
    settings: KubeSettings, topology: Topology, policies: PolicySet | None, *, generation: int = 1
) -> list[Manifest]:
    """Every object a run creates, in creation order (the policies as their first generation)."""
    check_topology_ports(topology)
    run_topology = rewrite_topology(topology, settings.namespace)
    hosts = HostRewriter(topology, settings.namespace)
    objects: list[Manifest] = [namespace_manifest(settings, owner="<host>:<pid>", heartbeat=0)]
    objects += workload_manifests(settings, run_topology)
    given = policies or PolicySet()
    chosen: list[Policy] = [*given.virtual_services, *given.destination_rules]
    objects += [policy_manifest(p, settings, hosts, generation) for p in chosen]
    return objects


def describe_call_graph(settings: KubeSettings, topology: Topology) -> list[str]:
    """The call graph as the echo pods run it: per caller, its Deployments and its calls in order.

    Each line of a call reads ``[k] METHOD authority path (on_error: ...)``, from the same
    :func:`~pytest_meshcheck.kube.manifests.calls_argument` JSON the caller's Deployments carry.
    """
    run_topology = rewrite_topology(topology, settings.namespace)
    callers = run_topology.callers
    if not callers:
        return ["none: no service of the topology calls another"]
    lines: list[str] = []
    for svc in callers:
        deployments = ", ".join(echo_deployment_name(svc, v) for v in svc.versions)
        lines.append(f"{svc.name} (Deployments {deployments}), for every request it serves:")
        for k, call in enumerate(json.loads(calls_argument(svc, run_topology, run_namespace_of(settings))), 1):
            lines.append(f"  [{k}] {call['method']} {call['authority']} {call['path']} (on_error: {call['on_error']})")
    leaves = [s.name for s in run_topology.services if not s.calls]
    if leaves:
        lines.append(f"leaf services (no calls): {', '.join(leaves)}")
    # True to the backend: convergence and endpoint checks read the agent's sidecar only.
    lines.append(
        "policy changes and endpoints are awaited in the agent's sidecar only; the callers' sidecars get the "
        "same istiod push, but a run does not wait for them"
    )
    return lines


def describe_checks(
    settings: KubeSettings, topology: Topology, policies: PolicySet | None, istio: IstioVersion
) -> list[str]:
    """The checks of a run, in the order they run."""
    ns = settings.namespace
    run_topology = rewrite_topology(topology, ns)
    kube = settings.kube_context
    prom = (
        f"Prometheus at --mesh-prometheus-url {settings.prometheus_url} answers /-/ready"
        if settings.prometheus_url
        else f"Prometheus: Service {settings.istio_namespace}/prometheus exists and selects a ready pod; a "
        "port-forward to it answers /-/ready (else: install Istio's addon or pass --mesh-prometheus-url)"
    )
    perms = ", ".join(f"{v} {r}{'.' + g if g else ''}" for v, r, g, _ in PERMISSIONS)
    stats = ", ".join(REQUIRED_STATS)
    services = ", ".join(
        f"{s.name} ({s.replicas} endpoint{'s' if s.replicas != 1 else ''})" for s in run_topology.services
    )
    n_policies = len(policies) if policies is not None else 0
    checks = [
        f"kubeconfig ({kubeconfig_paths(settings.kubeconfig)}) has kube context {kube!r}; else stop, listing the "
        "contexts it has",
    ]
    if settings.create:
        checks.append(
            f"--mesh-create: 'kind get clusters' lists {settings.kind_cluster!r}, else 'kind create cluster --name "
            f"{settings.kind_cluster}'; later 'istioctl install' and Istio's Prometheus addon if missing"
        )
    checks += [
        "the API server answers GET /version (else stop: cluster unreachable, with how to check it)",
        f"Istio is installed: GET /apis serves networking.istio.io; a Deployment app=istiod in "
        f"{settings.istio_namespace} has a ready replica; its image tag gives the Istio version, which drives "
        f"every expectation (this plan assumes {istio})",
        prom,
        f"permissions, by SelfSubjectAccessReview: {perms} (else stop, listing what is missing; nothing is created)",
        f"leftovers: namespaces labelled {MANAGED_BY_LABEL}={MANAGED_BY} of other runs whose heartbeat is older "
        f"than {settings.stale_after:g}s, or whose owner process on this host is gone, are deleted and listed; "
        "namespaces kept with --mesh-keep are only reported",
        f"create Namespace {ns} (403: stop with the missing permission; nothing was created)",
        f"sidecar injection: a server-side dry-run pod in {ns} comes back with an istio-proxy container",
        "create the objects below; wait until every Deployment has all replicas ready "
        f"(up to {settings.ready_timeout:g}s; on time-out, the pods' states and how to inspect them)",
        f"port-forward to pod {AGENT_NAME}:{AGENT_PORT}; its /healthz reports the load engine importable",
        "the agent's sidecar (its Envoy admin /clusters) has every replica as a healthy endpoint: "
        f"{services} (up to {settings.converge_timeout:g}s)",
        f"the agent's sidecar exposes {stats} for every service cluster (the proxyStatsMatcher annotation "
        f"{PROXY_STATS_MATCHER} took effect)",
        f"before measuring: Prometheus has scraped the agent pod and every echo pod (up == 1 in namespace {ns})",
        f"every policy change ({n_policies} policies at start): each policy is created as a new object "
        "<name>-g<generation>, the previous generation is deleted, and the run waits until the agent's sidecar "
        "config_dump has routes/clusters whose istio.config metadata names the new objects and none the old ones "
        f"(up to {settings.converge_timeout:g}s)",
        f"load: POST /load to the agent, which runs the same load engine through its own sidecar and returns the "
        f"same per-request records; chaos: the agent relays /chaos to each echo pod's admin port {ECHO_ADMIN_PORT}",
        f"teardown (also after a failure or Ctrl-C): revert chaos, delete Namespace {ns} and every object labelled "
        f"{RUN_ID_LABEL}={settings.run_id} elsewhere"
        + ("; --mesh-keep: keep the namespace and say how to remove it" if settings.keep else ""),
    ]
    return checks


def dry_run_plan(
    settings: KubeSettings,
    topology: Topology,
    policies: PolicySet | None,
    istio_version: str | IstioVersion | None,
    *,
    scenarios: Sequence[str] = (),
    full_files: bool = False,
) -> str:
    """The plan of a cluster run as text: header comments, the numbered checks, then the objects as YAML.

    Works with no cluster and no kubeconfig: nothing is contacted.

    Args:
        settings: The cluster settings (context, image, run id...).
        topology: The user's topology (services move into the run namespace).
        policies: Policies the run starts with (``None`` for none).
        istio_version: Istio release to assume; ``None`` for the default current release.
        scenarios: Test ids that would run, listed after the checks.
        full_files: Print ConfigMap files in full instead of a digest.

    Raises:
        TopologyError: The topology cannot run in a cluster (a reserved port, duplicate service names).
        PolicyError: A policy has no YAML text to apply.
    """
    istio = istio_version if isinstance(istio_version, IstioVersion) else parse_istio_version(istio_version)
    objects = plan_objects(settings, topology, policies)
    user_namespaces = ", ".join(sorted({s.namespace for s in topology.services}))
    lines = [
        "# pytest-meshcheck dry run (--mesh-dry-run): nothing was contacted and nothing was created.",
        f"# context: {settings.context} -> kube context {settings.kube_context}",
        f"# namespace: {settings.namespace} (run id {settings.run_id}; a real run picks a fresh id)",
        f"# echo image: {settings.echo_image}; Istio assumed: {istio} (a real run reads it from istiod)",
        f"# topology: {topology.source}; hosts of namespace(s) {user_namespaces} are rewritten to {settings.namespace}",
        "#",
        "# Checks, in order:",
    ]
    for i, check in enumerate(describe_checks(settings, topology, policies, istio), 1):
        lines.append(f"#  {i:2d}. {check}")
    lines += ["#", "# Call graph (echo --calls; Istio's iptables send each call through the caller pod's sidecar):"]
    lines += [f"#   {line}" for line in describe_call_graph(settings, topology)]
    if scenarios:
        lines += ["#", f"# Scenarios ({len(scenarios)}):"] + [f"#   - {s}" for s in scenarios]
    lines += ["#", f"# Objects ({len(objects)}), in creation order:"]
    lines += [f"#   - {object_ref(o)}" for o in objects]
    if not full_files:
        lines.append(f"# ConfigMap {AGENT_CONFIGMAP} and the echo ConfigMap files are shown as digests.")
    docs: list[Any] = [o if full_files else _abbreviate(o) for o in objects]
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=110, explicit_start=True)
    return "\n".join(lines) + "\n" + body
