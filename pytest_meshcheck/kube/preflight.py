"""Checks that end a cluster run before any scenario, with one clear message and the fix.

Order matters: everything that needs no object of ours (API server, Istio, Prometheus, permissions)
runs before the namespace is created, so these failures create nothing. Sidecar injection can only be
tested inside our namespace; it is probed with a server-side dry-run pod, so nothing runs either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from pytest_meshcheck.errors import MeshcheckError, MeshSetupError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.kube.client import KubeClient, KubeForbidden
from pytest_meshcheck.kube.settings import KubeSettings
from pytest_meshcheck.topology import Topology

ISTIO_GROUP = "networking.istio.io"
INSTALL_ISTIO = (
    "Install Istio (istioctl install -y; https://istio.io/latest/docs/setup/install/istioctl/), or add "
    "--mesh-create to have pytest-meshcheck install it into a Kind cluster"
)
INSTALL_PROMETHEUS = (
    "Install Istio's Prometheus addon (kubectl apply -f "
    "https://raw.githubusercontent.com/istio/istio/release-{minor}/samples/addons/prometheus.yaml), point "
    "--mesh-prometheus-url at a Prometheus that scrapes the sidecars, or add --mesh-create"
)
#: Counters hidden by a default sidecar that Envoy creates for every cluster: seeing them proves the
#: proxyStatsMatcher annotation took effect. (``outlier_detection.*`` only exists once a DestinationRule
#: sets outlierDetection, so it cannot be checked up front; the same annotation exposes it.)
REQUIRED_STATS = ("upstream_rq_retry", "upstream_rq_pending_overflow")

#: ``(verb, resource, group, namespaced)`` a run needs; checked with SelfSubjectAccessReviews.
PERMISSIONS: tuple[tuple[str, str, str, bool], ...] = (
    ("create", "namespaces", "", False),
    ("delete", "namespaces", "", False),
    ("create", "configmaps", "", True),
    ("create", "services", "", True),
    ("create", "pods", "", True),
    ("list", "pods", "", True),
    ("create", "pods/portforward", "", True),
    ("create", "deployments", "apps", True),
    ("list", "deployments", "apps", True),
    ("create", "virtualservices", ISTIO_GROUP, True),
    ("delete", "virtualservices", ISTIO_GROUP, True),
    ("create", "destinationrules", ISTIO_GROUP, True),
    ("delete", "destinationrules", ISTIO_GROUP, True),
    ("create", "sidecars", ISTIO_GROUP, True),
)


class IstioNotInstalled(MeshSetupError):
    """No Istio control plane (or no Istio API) in the cluster."""


class PrometheusNotInstalled(MeshSetupError):
    """No Prometheus addon in the Istio namespace, and no ``--mesh-prometheus-url``."""


@dataclass(frozen=True)
class IstioFacts:
    """What the cluster's Istio is: its version (driving the expectations) and istiod's image."""

    version: IstioVersion
    release: str
    istiod: str
    image: str
    api_versions: tuple[str, ...]


@dataclass(frozen=True)
class PrometheusTarget:
    """Where the Prometheus addon runs: a pod and the port to forward to."""

    namespace: str
    pod: str
    port: int


def check_api_server(client: KubeClient) -> str:
    """The cluster answers (``GET /version``); returns its version.

    Raises:
        MeshSetupError: Unreachable or refusing, with how to check the cluster.
    """
    return client.server_version()


_VERSION_IN_IMAGE = re.compile(r":v?(\d+\.\d+(?:\.\d+)?)(?:[-_.][\w.-]*)?(?:@sha256:[0-9a-f]+)?$")


def istio_release_of(deployment: dict[str, Any]) -> tuple[str, str]:
    """The Istio release of an istiod Deployment, from its image tag or its version labels.

    Returns:
        ``(release, image)``; ``release`` is ``""`` when neither tells.
    """
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    image = next((str(c.get("image", "")) for c in containers if c.get("name") == "discovery"), "")
    image = image or (str(containers[0].get("image", "")) if containers else "")
    match = _VERSION_IN_IMAGE.search(image)
    if match:
        return match.group(1), image
    labels = deployment.get("metadata", {}).get("labels", {})
    for key in ("app.kubernetes.io/version", "operator.istio.io/version", "helm.sh/chart"):
        found = re.search(r"(\d+\.\d+(?:\.\d+)?)", str(labels.get(key, "")))
        if found:
            return found.group(1), image
    return "", image


def check_istio(client: KubeClient, settings: KubeSettings, needed_api_versions: Iterable[str] = ()) -> IstioFacts:
    """Istio's API is served, istiod is ready, and its version is known and supported.

    Args:
        client: The cluster.
        settings: For the Istio namespace and the context name in messages.
        needed_api_versions: ``networking.istio.io`` versions the policies use (``v1beta1``...).

    Raises:
        IstioNotInstalled: No Istio API or no istiod.
        MeshSetupError: istiod not ready, unknown or unsupported version, or a policy API version not served.
    """
    served = client.group_versions(ISTIO_GROUP)
    if not served:
        raise IstioNotInstalled(
            f"Istio is not installed in kube context {client.context!r}: the API server does not serve "
            f"{ISTIO_GROUP}. {INSTALL_ISTIO}"
        )
    ns = settings.istio_namespace
    candidates = client.list_deployments(ns, "app=istiod") or [
        d for d in [client.read_deployment(ns, "istiod")] if d is not None
    ]
    if not candidates:
        raise IstioNotInstalled(
            f"Istio's API is served, but there is no istiod Deployment (label app=istiod) in namespace {ns!r} "
            f"of kube context {client.context!r}. {INSTALL_ISTIO}"
        )
    ready = [d for d in candidates if int((d.get("status") or {}).get("readyReplicas") or 0) > 0]
    if not ready:
        names = ", ".join(d["metadata"]["name"] for d in candidates)
        raise MeshSetupError(
            f"istiod ({names} in {ns}) has no ready replica, so no sidecar can get config. Check it with "
            f"'kubectl --context {client.context} -n {ns} get pods -l app=istiod' and its logs, then rerun"
        )
    istiod = ready[0]
    release, image = istio_release_of(istiod)
    if not release:
        raise MeshSetupError(
            f"cannot tell the Istio version of {ns}/{istiod['metadata']['name']} (image {image!r} has no version "
            "tag); pass it with --mesh-istio-version"
        )
    try:
        version = IstioVersion.parse(release)
    except MeshcheckError as exc:
        raise MeshSetupError(f"istiod in {ns} runs Istio {release}: {exc}") from exc
    missing = sorted(set(needed_api_versions) - set(served))
    if missing:
        raise MeshSetupError(
            f"the policies use {', '.join(f'{ISTIO_GROUP}/{v}' for v in missing)}, which this cluster's Istio "
            f"{release} does not serve (served: {', '.join(served)}); change the policies' apiVersion"
        )
    return IstioFacts(version, release, istiod["metadata"]["name"], image, tuple(served))


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return (pod.get("status") or {}).get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


def find_prometheus(client: KubeClient, settings: KubeSettings, istio: IstioFacts | None) -> PrometheusTarget:
    """The Prometheus addon's Service in the Istio namespace, and a ready pod behind it.

    Raises:
        PrometheusNotInstalled: No ``prometheus`` Service.
        MeshSetupError: The Service selects no ready pod.
    """
    ns = settings.istio_namespace
    minor = f"{istio.version.major}.{istio.version.minor}" if istio else "1.30"
    service = client.read_service(ns, "prometheus")
    if service is None:
        raise PrometheusNotInstalled(
            f"Istio is installed but Prometheus is not: there is no Service 'prometheus' in namespace {ns!r} of "
            f"kube context {client.context!r}. {INSTALL_PROMETHEUS.format(minor=minor)}"
        )
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    ports = spec.get("ports") or [{}]
    port_spec = next((p for p in ports if p.get("port") == 9090), ports[0])
    target = port_spec.get("targetPort", port_spec.get("port", 9090))
    pods = [p for p in client.list_pods(ns, ",".join(f"{k}={v}" for k, v in selector.items())) if _ready(p)]
    if not selector or not pods:
        raise MeshSetupError(
            f"the Prometheus Service {ns}/prometheus has no ready pod; check 'kubectl --context {client.context} "
            f"-n {ns} get pods' and wait for it, or pass --mesh-prometheus-url"
        )
    pod = pods[0]
    if isinstance(target, str):  # a named container port
        for container in pod.get("spec", {}).get("containers", []):
            for p in container.get("ports") or []:
                if p.get("name") == target:
                    target = p.get("containerPort")
        if isinstance(target, str):
            target = 9090
    return PrometheusTarget(ns, pod["metadata"]["name"], int(target))


def check_prometheus_ready(url: str, how: str) -> None:
    """Prometheus answers ``/-/ready``.

    Raises:
        MeshSetupError: It does not; ``how`` says how it was reached.
    """
    try:
        resp = httpx.get(url.rstrip("/") + "/-/ready", timeout=10.0)
    except httpx.HTTPError as exc:
        raise MeshSetupError(
            f"Prometheus ({how}, {url}) is unreachable: {exc}. Check the URL or the addon's pod, or pass "
            "--mesh-prometheus-url"
        ) from exc
    if resp.status_code != 200:
        raise MeshSetupError(
            f"Prometheus ({how}, {url}) is not ready: /-/ready answered {resp.status_code} "
            f"{resp.text.strip()[:200]}; wait for it to finish starting and rerun"
        )


def check_permissions(client: KubeClient, namespace: str) -> list[str]:
    """Every permission a run needs, asked with SelfSubjectAccessReviews.

    Returns:
        The permissions the server could not confirm either way (the review API is unavailable).

    Raises:
        MeshSetupError: Listing every missing permission and how to get them.
    """
    denied: list[str] = []
    unknown: list[str] = []
    for verb, resource, group, namespaced in PERMISSIONS:
        answer = client.can_i(verb, resource, group=group, namespace=namespace if namespaced else None)
        label = f"{verb} {resource}{'.' + group if group else ''}"
        if answer is None:
            unknown.append(label)
        elif not answer:
            denied.append(label)
    if denied:
        raise KubeForbidden(
            f"kube context {client.context!r} may not: {', '.join(denied)} (needed to create and remove the run "
            f"namespace {namespace} and its objects). Bind a role granting them (docs/kind.md, 'Permissions'), "
            "or use a context that has them; nothing was created"
        )
    return unknown


def check_injection(client: KubeClient, pod_template: dict[str, Any], namespace: str) -> None:
    """Istio's injector adds a sidecar to pods of the run namespace (a server-side dry-run pod).

    Args:
        client: The cluster.
        pod_template: A Deployment's ``spec.template`` to probe with.
        namespace: The run namespace (already created, labelled ``istio-injection=enabled``).

    Raises:
        MeshSetupError: The dry-run pod came back without ``istio-proxy``.
    """
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**pod_template["metadata"], "name": "meshcheck-injection-probe", "namespace": namespace},
        "spec": pod_template["spec"],
    }
    pod = client.create(probe, dry_run=True)
    if not has_sidecar(pod):
        raise MeshSetupError(
            f"Istio's sidecar injector did not inject into namespace {namespace} (labelled istio-injection=enabled; "
            "a dry-run pod came back without an istio-proxy container). Check that the injector webhook exists "
            f"('kubectl --context {client.context} get mutatingwebhookconfigurations'); a revision-based install "
            "(istio.io/rev) or a webhook namespaceSelector that excludes new namespaces prevents injection"
        )


def has_sidecar(pod: dict[str, Any]) -> bool:
    """Whether a pod has Istio's ``istio-proxy`` (as a container, or a native-sidecar init container)."""
    spec = pod.get("spec") or {}
    return any(
        c.get("name") == "istio-proxy" for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
    )


def missing_stats(stats_doc: dict[str, Any], topology: Topology) -> list[str]:
    """Counters of :data:`REQUIRED_STATS` the caller's sidecar does not expose, per service cluster.

    Args:
        stats_doc: The sidecar's ``/stats?format=json`` answer (through the agent).
        topology: The run's topology (services in the run namespace).
    """
    names = [str(s.get("name", "")) for s in stats_doc.get("stats", []) if isinstance(s, dict) and "name" in s]
    out: list[str] = []
    for svc in topology.services:
        cluster = f"outbound|{svc.port}||{svc.fqdn}"
        for stat in REQUIRED_STATS:
            if not any(cluster in n and n.endswith("." + stat) for n in names):
                out.append(f"cluster.{cluster}.{stat}")
    return out


def stats_fix() -> str:
    """How to fix missing counters."""
    return (
        "The pods carry the proxy.istio.io/config proxyStatsMatcher annotation that exposes them; a mesh-wide "
        "ProxyConfig or a meshConfig.defaultConfig that forbids per-pod overrides hides them. Check "
        "'istioctl proxy-config bootstrap' of the agent pod for stats_matcher"
    )
