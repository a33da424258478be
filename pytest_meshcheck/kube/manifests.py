"""Every Kubernetes and Istio object a cluster run creates, as plain dicts (pure functions, no cluster).

Objects, in creation order (see :func:`run_manifests`):

* ``Namespace meshcheck-<run id>``: labelled with the run id, ``managed-by`` and ``istio-injection=enabled``.
* ``Sidecar default``: scopes the sidecars of the namespace to the namespace's own services, so their
  config (and their stats) stay small on a shared cluster.
* ``ConfigMap meshcheck-echo`` (the echo workload, :mod:`pytest_meshcheck.workload.echo`) and
  ``ConfigMap meshcheck-agent`` (the in-mesh agent plus the load engine modules it runs): the bundles of
  :mod:`pytest_meshcheck.workload.bundle`.
* Per service a ``Service`` (port named ``http``, ``appProtocol: http``: Istio then routes and retries the
  hop as HTTP); per service and version a ``Deployment`` running the echo file in a stock Python image.
  The echo of a service with calls gets ``--calls`` (:func:`calls_argument`): it calls each dependency's
  Service in the run namespace, and Istio's iptables send that call through the pod's own sidecar.
* ``Deployment meshcheck-agent``: the caller. Its sidecar is the proxy that enforces the policies.
* The policies, rewritten into the namespace, named ``<name>-g<generation>``.

Every pod carries the ``proxy.istio.io/config`` ``proxyStatsMatcher`` annotation: a default sidecar
hides ``envoy_cluster_upstream_rq_retry``, the outlier-detection and the overflow counters
(istio-translation.md §8.2), and the assertions need them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pytest_meshcheck.backend import WorkloadInstance
from pytest_meshcheck.kube.rewrite import HostRewriter, policy_document, rewrite_document
from pytest_meshcheck.kube.settings import (
    COMPONENT_LABEL,
    GENERATION_LABEL,
    HEARTBEAT_ANNOTATION,
    OWNER_ANNOTATION,
    POLICY_NAME_LABEL,
    SOURCE_ANNOTATION,
    KubeSettings,
)
from pytest_meshcheck.policy.model import Policy
from pytest_meshcheck.topology import CLUSTER_DOMAIN, ServiceSpec, Topology, VersionSpec
from pytest_meshcheck.workload.bundle import AGENT_FILES, ECHO_FILES, ShippedFile

Manifest = dict[str, Any]

ECHO_ADMIN_PORT = 9901
AGENT_PORT = 8070
AGENT_NAME = "meshcheck-agent"
ECHO_CONFIGMAP = "meshcheck-echo"
AGENT_CONFIGMAP = "meshcheck-agent"
MOUNT_PATH = "/opt/meshcheck"
# Not 1337: Istio's iptables rules let traffic of the proxy's own uid bypass the sidecar.
RUN_AS_USER = 65532
ENVOY_ADMIN_URL = "http://127.0.0.1:15000"

#: ``proxyStatsMatcher`` of every pod: all outbound cluster stats (retries, timeouts, pending overflow,
#: outlier detection) and the outbound HTTP connection managers' (fault injection counters).
PROXY_STATS_MATCHER = {
    "inclusionPrefixes": ["cluster.outbound", "http.outbound"],
    "inclusionRegexps": [".*outlier_detection.*", ".*upstream_rq_retry.*", ".*upstream_rq_pending.*"],
    "inclusionSuffixes": ["upstream_rq_timeout", "upstream_cx_overflow"],
}


def _meta(settings: KubeSettings, name: str, component: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": settings.namespace,
        "labels": {**settings.labels, COMPONENT_LABEL: component},
    }
    meta.update(extra)
    return meta


def proxy_config(*, hold_application: bool = False) -> str:
    """The ``proxy.istio.io/config`` annotation value (YAML text)."""
    import yaml

    config: dict[str, Any] = {"proxyStatsMatcher": PROXY_STATS_MATCHER}
    if hold_application:
        config["holdApplicationUntilProxyStarts"] = True
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def namespace_manifest(settings: KubeSettings, *, owner: str = "", heartbeat: float | None = None) -> Manifest:
    """The run namespace, with sidecar injection on and the heartbeat the leftover sweep reads."""
    annotations: dict[str, str] = {}
    if owner:
        annotations[OWNER_ANNOTATION] = owner
    if heartbeat is not None:
        annotations[HEARTBEAT_ANNOTATION] = f"{heartbeat:.0f}"
    meta: dict[str, Any] = {
        "name": settings.namespace,
        "labels": {**settings.labels, "istio-injection": "enabled"},
    }
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def sidecar_manifest(settings: KubeSettings) -> Manifest:
    """An Istio ``Sidecar`` limiting the namespace's proxies to the namespace's own services."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": _meta(settings, "default", "mesh-scope"),
        "spec": {"egress": [{"hosts": ["./*"]}]},
    }


def _configmap(settings: KubeSettings, name: str, files: tuple[ShippedFile, ...], component: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(settings, name, component),
        "data": {f.key: f.content() for f in files},
    }


def echo_configmap(settings: KubeSettings) -> Manifest:
    """The echo workload's files, mounted into every echo pod as a package tree."""
    return _configmap(settings, ECHO_CONFIGMAP, ECHO_FILES, "echo")


def agent_configmap(settings: KubeSettings) -> Manifest:
    """The agent and the load-engine modules, mounted into the agent pod as a package tree."""
    return _configmap(settings, AGENT_CONFIGMAP, AGENT_FILES, "agent")


def files_digest(files: tuple[ShippedFile, ...]) -> str:
    """Short sha256 over the shipped files, put on pod templates so a changed file rolls the pods."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.key.encode() + b"\0" + f.content().encode() + b"\0")
    return h.hexdigest()[:16]


def _volume(configmap: str, files: tuple[ShippedFile, ...]) -> dict[str, Any]:
    return {
        "name": "meshcheck",
        "configMap": {
            "name": configmap,
            "items": [{"key": f.key, "path": f.path} for f in files],
            "defaultMode": 0o444,
        },
    }


def _container(settings: KubeSettings, name: str, args: list[str], **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": settings.echo_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-I", "-S", *args],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "volumeMounts": [{"name": "meshcheck", "mountPath": MOUNT_PATH, "readOnly": True}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    container.update(extra)
    return container


def echo_deployment_name(svc: ServiceSpec, version: VersionSpec) -> str:
    """``<service>-<version>``."""
    return f"{svc.name}-{version.name}"


def service_manifest(settings: KubeSettings, svc: ServiceSpec) -> Manifest:
    """The Kubernetes Service of one topology service (HTTP, so Istio applies HTTP routing)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, svc.name, "echo"),
        "spec": {
            "selector": {"app": svc.name},
            "ports": [{"name": "http", "port": svc.port, "targetPort": svc.port, "appProtocol": "http"}],
        },
    }


def run_namespace_of(settings: KubeSettings) -> Callable[[ServiceSpec], str]:
    """Where a run creates each topology Service: the run namespace, whatever namespace the topology names.

    :func:`service_manifest` puts every Service there, so a call addressed through this mapping reaches the
    Service the run created, with or without :func:`~pytest_meshcheck.kube.rewrite.rewrite_topology` first.
    """
    return lambda _svc: settings.namespace


def calls_argument(svc: ServiceSpec, topology: Topology, namespace_of: Callable[[ServiceSpec], str]) -> str:
    """The echo's ``--calls`` JSON for ``svc``: its calls in order, each with the authority to connect to.

    The single place a cluster run builds it (the Deployments and the dry-run plan both read it). The
    authority is the called Service's cluster FQDN and port (``payment-service.meshcheck-1a2b.svc.cluster.local:8080``):
    the echo connects there and sends it as ``Host``, so the pod's sidecar routes it by the callee's
    VirtualService, as production traffic is routed. A leaf service gives ``[]``.

    Args:
        svc: The calling service.
        topology: The topology ``svc`` belongs to (resolves each callee's port).
        namespace_of: Namespace a callee's Service lives in during the run (:func:`run_namespace_of`).

    Raises:
        TopologyError: A call names a service the topology does not have.
    """
    entries: list[dict[str, Any]] = []
    for call in svc.calls:
        target = topology.service(call.service)
        entries.append(
            {
                "service": target.name,
                "authority": f"{target.name}.{namespace_of(target)}.{CLUSTER_DOMAIN}:{target.port}",
                "method": call.method,
                "path": call.path,
                "on_error": call.on_error,
            }
        )
    return json.dumps(entries, separators=(",", ":"))


def _literal(arg: str) -> str:
    """``arg`` with Kubernetes' ``$(VAR)`` expansion in container commands escaped (``$$`` is one ``$``)."""
    return arg.replace("$", "$$")


def echo_deployment(settings: KubeSettings, svc: ServiceSpec, version: VersionSpec, topology: Topology) -> Manifest:
    """The echo pods of one version of one service; a service with calls gets ``--calls``.

    Args:
        settings: The run's settings.
        svc: The service.
        version: One of its versions.
        topology: The topology ``svc`` belongs to (resolves the services it calls).
    """
    pod_labels = {**svc.instance_labels(version), **settings.labels, "sidecar.istio.io/inject": "true"}
    annotations = {
        "proxy.istio.io/config": proxy_config(),
        # Chaos and metrics go straight to the admin port, so they neither count as mesh traffic nor
        # depend on the mesh's mTLS mode.
        "traffic.sidecar.istio.io/excludeInboundPorts": str(ECHO_ADMIN_PORT),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ECHO_ADMIN_PORT),
        "prometheus.io/path": "/metrics",
        "meshcheck.io/files": files_digest(ECHO_FILES),
    }
    args = [
        f"{MOUNT_PATH}/echo.py",
        "--service", svc.name, "--version", version.name, "--instance", "$(POD_NAME)",
        "--namespace", "$(POD_NAMESPACE)", "--host", "0.0.0.0", "--port", str(svc.port),
        "--admin-host", "0.0.0.0", "--admin-port", str(ECHO_ADMIN_PORT),
    ]  # fmt: skip
    if svc.calls:
        # A path may hold a '$'; the kubelet would otherwise expand "$(NAME)" inside the JSON.
        args += ["--calls", _literal(calls_argument(svc, topology, run_namespace_of(settings)))]
    container = _container(
        settings,
        "echo",
        args,
        ports=[
            {"name": "http", "containerPort": svc.port, "protocol": "TCP"},
            {"name": "admin", "containerPort": ECHO_ADMIN_PORT, "protocol": "TCP"},
        ],
        readinessProbe={
            "httpGet": {"path": "/healthz", "port": ECHO_ADMIN_PORT},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        resources={"requests": {"cpu": "25m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, echo_deployment_name(svc, version), "echo"),
        "spec": {
            "replicas": version.replicas,
            "selector": {"matchLabels": svc.instance_labels(version)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [_volume(ECHO_CONFIGMAP, ECHO_FILES)],
                },
            },
        },
    }


def agent_deployment(settings: KubeSettings) -> Manifest:
    """The in-mesh agent: the caller whose sidecar enforces the policies under test."""
    labels = {"app": AGENT_NAME, "version": "v1"}
    annotations = {
        "proxy.istio.io/config": proxy_config(hold_application=True),
        "traffic.sidecar.istio.io/excludeOutboundPorts": str(ECHO_ADMIN_PORT),
        "meshcheck.io/files": files_digest(AGENT_FILES),
    }
    args = [
        f"{MOUNT_PATH}/agent.py", "--host", "127.0.0.1", "--port", str(AGENT_PORT),
        "--envoy-admin", ENVOY_ADMIN_URL, "--workload-admin-port", str(ECHO_ADMIN_PORT),
    ]  # fmt: skip
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{AGENT_PORT}/healthz', timeout=2).read()"
    container = _container(
        settings,
        "agent",
        args,
        # The agent listens on the pod's loopback only: the test process reaches it by port-forward.
        readinessProbe={"exec": {"command": ["python3", "-I", "-S", "-c", probe]}, "periodSeconds": 2},
        resources={"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, AGENT_NAME, "agent"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": {**labels, **settings.labels, "sidecar.istio.io/inject": "true"},
                    "annotations": annotations,
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [_volume(AGENT_CONFIGMAP, AGENT_FILES)],
                },
            },
        },
    }


def policy_object_name(name: str, generation: int) -> str:
    """``<name>-g<generation>``: each generation is a new object, so its arrival in the proxy is visible."""
    suffix = f"-g{generation}"
    return name[: 253 - len(suffix)].rstrip("-.") + suffix


def policy_manifest(policy: Policy, settings: KubeSettings, hosts: HostRewriter, generation: int) -> Manifest:
    """One user policy as applied: rewritten into the run namespace, renamed and labelled.

    Raises:
        PolicyError: The policy has no YAML text to apply.
    """
    doc = rewrite_document(policy_document(policy), hosts)
    meta = doc["metadata"]
    meta["name"] = policy_object_name(policy.name, generation)
    meta["labels"] = {
        **(meta.get("labels") or {}),
        **settings.labels,
        COMPONENT_LABEL: "policy",
        GENERATION_LABEL: str(generation),
    }
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        POLICY_NAME_LABEL: policy.name,
        SOURCE_ANNOTATION: f"{policy.source.file}:{policy.source.line}",
    }
    return doc


def workload_manifests(settings: KubeSettings, topology: Topology) -> list[Manifest]:
    """Everything but the namespace and the policies, in creation order."""
    out: list[Manifest] = [sidecar_manifest(settings), echo_configmap(settings), agent_configmap(settings)]
    out += [service_manifest(settings, svc) for svc in topology.services]
    out += [echo_deployment(settings, svc, v, topology) for svc in topology.services for v in svc.versions]
    out.append(agent_deployment(settings))
    return out


def check_topology_ports(topology: Topology) -> None:
    """Refuse a service port the echo admin port or an Istio proxy port would shadow.

    Raises:
        TopologyError: Naming the service and port.
    """
    from pytest_meshcheck.errors import TopologyError

    for svc in topology.services:
        if svc.port == ECHO_ADMIN_PORT or 15000 <= svc.port <= 15099:
            raise TopologyError(
                f"{topology.source}: service {svc.name!r} uses port {svc.port}, which a cluster run reserves "
                f"(the echo admin port {ECHO_ADMIN_PORT}, or Istio's proxy ports 15000-15099); choose another port"
            )


def workload_instances(topology: Topology, pods: list[dict[str, Any]], agent_url: str) -> list[WorkloadInstance]:
    """The running echo pods as :class:`WorkloadInstance`, in topology order, admin through the agent's relay.

    Args:
        topology: The run's topology (services in the run namespace).
        pods: The run's pods, as the API returns them.
        agent_url: Base URL of the agent (its port-forward).
    """
    out: list[WorkloadInstance] = []
    for svc in topology.services:
        for version in svc.versions:
            want = svc.instance_labels(version).items()
            chosen = [
                p
                for p in pods
                if want <= (p["metadata"].get("labels") or {}).items()
                and (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")
            ]
            for pod in sorted(chosen, key=lambda p: str(p["metadata"]["name"])):
                ip = str(pod["status"]["podIP"])
                out.append(
                    WorkloadInstance(
                        service=svc.name,
                        namespace=svc.namespace,
                        version=version.name,
                        name=str(pod["metadata"]["name"]),
                        address=ip,
                        port=svc.port,
                        admin_url=f"{agent_url}/workload/{ip}:{ECHO_ADMIN_PORT}",
                    )
                )
    return out


def object_ref(obj: Manifest) -> str:
    """``Kind namespace/name`` (or ``Kind name`` for cluster-scoped objects), for messages."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"
