"""Thin wrapper over the ``kubernetes`` client: the calls a run makes, with errors a user can act on.

Objects go in and come out as plain dicts (what the manifests and the API speak), never as the
client's generated model classes. Every API failure becomes a :class:`~pytest_meshcheck.errors.MeshSetupError`
naming the request, the kube context and the fix; 403 becomes :class:`KubeForbidden`, 404 returns
``None`` from readers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.portforward import PortForward

DEFAULT_KUBECONFIG = "~/.kube/config"
_TIMEOUT = (5.0, 30.0)  # connect, read


class KubeForbidden(MeshSetupError):
    """The API server refused a request (HTTP 403)."""


class KubeNotFound(MeshSetupError):
    """The object does not exist (HTTP 404)."""


class KubeConflict(MeshSetupError):
    """The object already exists (HTTP 409)."""


def kubeconfig_paths(kubeconfig: Path | str | None) -> str:
    """The kubeconfig path list in force: the given file, else ``$KUBECONFIG``, else ``~/.kube/config``."""
    if kubeconfig is not None:
        return str(kubeconfig)
    return os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG


def list_contexts(kubeconfig: Path | str | None) -> list[str]:
    """Context names of the kubeconfig (``[]`` when there is no kubeconfig at all)."""
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import list_kube_config_contexts

    paths = kubeconfig_paths(kubeconfig)
    if not any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        return []
    try:
        contexts, _ = list_kube_config_contexts(paths)  # type: ignore[no-untyped-call]  # untyped library
    except ConfigException:
        return []
    return sorted(str(c["name"]) for c in contexts or [])


def select_context_error(context: str, kubeconfig: Path | str | None) -> str | None:
    """Why ``context`` cannot be used, or ``None`` when the kubeconfig has it.

    Args:
        context: The kube context name (``kind-<cluster>`` for ``--mesh-context kind``).
        kubeconfig: ``--mesh-kubeconfig``; ``None`` means ``$KUBECONFIG`` or ``~/.kube/config``.

    Returns:
        A message naming the kubeconfig, the contexts it has, and the fix; ``None`` if all is well.
    """
    paths = kubeconfig_paths(kubeconfig)
    existing = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().is_file()]
    if not existing:
        return (
            f"no kubeconfig found at {paths}: kube context {context!r} cannot be used. Point --mesh-kubeconfig "
            "(or KUBECONFIG) at your kubeconfig, create a Kind cluster (kind create cluster), or add "
            "--mesh-create; --mesh-dry-run needs no cluster"
        )
    contexts = list_contexts(paths)
    if context in contexts:
        return None
    available = ", ".join(contexts) if contexts else "none"
    hint = ""
    if context.startswith("kind-"):
        hint = f" For Kind, create it with 'kind create cluster --name {context[5:]}' or pass --mesh-create."
    return (
        f"kube context {context!r} not found in kubeconfig {paths}; available: {available}. Set --mesh-context "
        f"(or --mesh-kind-cluster for kind) to one of them.{hint}"
    )


class KubeClient:
    """The Kubernetes API of one kube context.

    Use :meth:`connect`; ``api_client`` is a ``kubernetes.client.ApiClient``.
    """

    def __init__(self, api_client: Any, context: str, kubeconfig: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.context = context
        self.kubeconfig = kubeconfig
        self.host = str(api_client.configuration.host)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.authz = client.AuthorizationV1Api(api_client)
        self.version_api = client.VersionApi(api_client)
        self.apis = client.ApisApi(api_client)

    @classmethod
    def connect(cls, context: str, kubeconfig: Path | str | None = None) -> KubeClient:
        """Load ``context`` from the kubeconfig (nothing is contacted yet).

        Raises:
            MeshSetupError: No kubeconfig, unknown context, or a kubeconfig the client cannot use.
        """
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.config.kube_config import load_kube_config

        problem = select_context_error(context, kubeconfig)
        if problem:
            raise MeshSetupError(problem)
        paths = kubeconfig_paths(kubeconfig)
        configuration = Configuration()
        try:
            # persist_config=False: refreshed tokens must never be written back to the user's kubeconfig.
            load_kube_config(  # type: ignore[no-untyped-call]  # untyped library
                config_file=paths, context=context, client_configuration=configuration, persist_config=False
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise MeshSetupError(f"kube context {context!r} in {paths} cannot be used: {exc}") from exc
        # One attempt per call: an unreachable cluster must fail in seconds, not after urllib3's retries.
        configuration.retries = 0
        return cls(ApiClient(configuration), context, paths)

    def close(self) -> None:
        """Release the connection pool."""
        self.api_client.close()

    # ------------------------------------------------------------------ error mapping

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        kwargs.setdefault("_request_timeout", _TIMEOUT)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise self._api_error(what, exc) from None
        except (Urllib3Error, OSError) as exc:
            raise MeshSetupError(self._unreachable(what, exc)) from None

    def _unreachable(self, what: str, exc: BaseException) -> str:
        return (
            f"cannot reach the Kubernetes API server {self.host} of kube context {self.context!r} ({what}): "
            f"{type(exc).__name__}: {exc}. Is the cluster running? Check with 'kubectl --context {self.context} "
            "cluster-info' (for Kind: 'kind get clusters'), or add --mesh-create to create a Kind cluster"
        )

    def _api_error(self, what: str, exc: Any) -> MeshSetupError:
        status = int(exc.status or 0)
        message = str(exc.reason or "")
        with_body = exc.body
        if with_body:
            try:
                message = json.loads(with_body).get("message", message)
            except (ValueError, AttributeError):
                message = str(with_body)[:300]
        if status == 0:
            return MeshSetupError(self._unreachable(what, exc))
        text = f"{what} failed: HTTP {status}: {message} (kube context {self.context!r})"
        if status == 401:
            return MeshSetupError(text + ". Your credentials were rejected: log in to the cluster again")
        if status == 403:
            return KubeForbidden(
                text + ". Ask a cluster admin for the permission, or use a kube context that has it "
                "(see docs/kind.md, 'Permissions')"
            )
        if status == 404:
            return KubeNotFound(text)
        if status == 409:
            return KubeConflict(text)
        return MeshSetupError(text)

    def _json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        resp = self._call(what, fn, *args, _preload_content=False, **kwargs)
        return json.loads(resp.data or b"null")

    def _read(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            doc = self._json(what, fn, *args, **kwargs)
        except KubeNotFound:
            return None
        return doc if isinstance(doc, dict) else None

    # ------------------------------------------------------------------ discovery and permissions

    def server_version(self) -> str:
        """The API server's ``gitVersion`` (``GET /version``)."""
        doc = self._json("GET /version", self.version_api.get_code)
        return str(doc.get("gitVersion", "unknown"))

    def group_versions(self, group: str) -> list[str]:
        """Versions the server serves for an API group (``[]`` when the group is unknown)."""
        doc = self._json("GET /apis", self.apis.get_api_versions)
        for g in doc.get("groups", []):
            if g.get("name") == group:
                return [str(v.get("version")) for v in g.get("versions", [])]
        return []

    def can_i(self, verb: str, resource: str, *, group: str = "", namespace: str | None = None) -> bool | None:
        """SelfSubjectAccessReview; ``None`` when the server cannot tell (the review API itself refused).

        ``resource`` may name a subresource (``pods/portforward``).
        """
        resource, _, subresource = resource.partition("/")
        attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if subresource:
            attrs["subresource"] = subresource
        if namespace:
            attrs["namespace"] = namespace
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        try:
            doc = self._json("POST selfsubjectaccessreviews", self.authz.create_self_subject_access_review, body)
        except (KubeForbidden, KubeNotFound):
            return None
        return bool((doc.get("status") or {}).get("allowed"))

    # ------------------------------------------------------------------ reads

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        """The namespace, or ``None``."""
        return self._read(f"GET namespace {name}", self.core.read_namespace, name)

    def list_namespaces(self, label_selector: str) -> list[dict[str, Any]]:
        """Namespaces matching a label selector."""
        doc = self._json(
            f"LIST namespaces -l {label_selector}", self.core.list_namespace, label_selector=label_selector
        )
        return list(doc.get("items") or [])

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment, or ``None``."""
        return self._read(f"GET deployment {namespace}/{name}", self.apps.read_namespaced_deployment, name, namespace)

    def list_deployments(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        """Deployments of a namespace."""
        doc = self._json(
            f"LIST deployments in {namespace}",
            self.apps.list_namespaced_deployment,
            namespace,
            label_selector=label_selector,
        )
        return list(doc.get("items") or [])

    def read_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Service, or ``None``."""
        return self._read(f"GET service {namespace}/{name}", self.core.read_namespaced_service, name, namespace)

    def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        """Pods of a namespace."""
        doc = self._json(
            f"LIST pods in {namespace}", self.core.list_namespaced_pod, namespace, label_selector=label_selector
        )
        return list(doc.get("items") or [])

    def list_custom(
        self, group: str, version: str, plural: str, label_selector: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Custom objects (in one namespace, or in all)."""
        what = f"LIST {plural}.{group} -l {label_selector}"
        if namespace is None:
            doc = self._json(
                what, self.custom.list_cluster_custom_object, group, version, plural, label_selector=label_selector
            )
        else:
            doc = self._json(
                what,
                self.custom.list_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                label_selector=label_selector,
            )
        return list(doc.get("items") or [])

    # ------------------------------------------------------------------ writes

    def create(self, manifest: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Create one object from its manifest (server-side dry run with ``dry_run``).

        Raises:
            KubeForbidden: No permission.
            KubeConflict: It already exists.
            MeshSetupError: Any other failure.
        """
        kind = manifest["kind"]
        api_version = manifest["apiVersion"]
        ns = manifest["metadata"].get("namespace")
        name = manifest["metadata"]["name"]
        what = f"create {kind} {ns + '/' if ns else ''}{name}"
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        if api_version == "v1" and kind == "Namespace":
            doc = self._json(what, self.core.create_namespace, manifest, **extra)
        elif api_version == "v1" and kind in _CORE_CREATE:
            doc = self._json(what, getattr(self.core, _CORE_CREATE[kind]), ns, manifest, **extra)
        elif api_version == "apps/v1" and kind == "Deployment":
            doc = self._json(what, self.apps.create_namespaced_deployment, ns, manifest, **extra)
        elif "/" in api_version and kind in CUSTOM_PLURALS:
            group, version = api_version.split("/", 1)
            doc = self._json(
                what,
                self.custom.create_namespaced_custom_object,
                group,
                version,
                ns,
                CUSTOM_PLURALS[kind],
                manifest,
                **extra,
            )
        else:
            raise MeshSetupError(f"{what}: pytest-meshcheck does not create {api_version} {kind} objects")
        return dict(doc or {})

    def delete_namespace(self, name: str) -> bool:
        """Delete a namespace and everything in it; ``False`` when it was already gone."""
        try:
            self._call(
                f"delete namespace {name}",
                self.core.delete_namespace,
                name,
                propagation_policy="Background",
                _preload_content=False,
            )
        except KubeNotFound:
            return False
        return True

    def delete_custom(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete a custom object; ``False`` when it was already gone."""
        group, version = api_version.split("/", 1)
        try:
            self._call(
                f"delete {kind} {namespace}/{name}",
                self.custom.delete_namespaced_custom_object,
                group,
                version,
                namespace,
                CUSTOM_PLURALS[kind],
                name,
                _preload_content=False,
            )
        except KubeNotFound:
            return False
        return True

    def patch_namespace_annotations(self, name: str, annotations: dict[str, str]) -> None:
        """Merge-patch annotations onto a namespace."""
        self._call(
            f"patch namespace {name}",
            self.core.patch_namespace,
            name,
            {"metadata": {"annotations": annotations}},
            # Some client versions default PATCH to a JSON Patch (a list of operations); this is a merge patch.
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )

    # ------------------------------------------------------------------ port-forward

    def port_forward(
        self, namespace: str, pod: str, port: int, log: Callable[[str], None] | None = None
    ) -> PortForward:
        """A started :class:`PortForward` from ``127.0.0.1:<free port>`` to ``pod:port``."""
        from kubernetes.stream import portforward

        def open_stream() -> tuple[Any, Callable[[], str | None]]:
            pf = portforward(self.core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
            return pf.socket(port), lambda: pf.error(port)

        return PortForward(open_stream, f"pod {namespace}/{pod}:{port}", log).start()


_CORE_CREATE = {
    "ConfigMap": "create_namespaced_config_map",
    "Service": "create_namespaced_service",
    "Pod": "create_namespaced_pod",
}

#: Istio kinds we create, and their REST plural.
CUSTOM_PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Sidecar": "sidecars",
}
