"""``--mesh-create``: a Kind cluster with Istio and its Prometheus addon, through the ``kind`` and ``istioctl`` CLIs.

An existing cluster of the same name is reused, and Istio or Prometheus already present are left alone
(pytest-kind's idempotent ``create()``). These are cluster infrastructure, not run objects: clean-up
never removes them (``kind delete cluster --name <name>`` does). Every command runs as an argv list with
a timeout; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_meshcheck.errors import MeshSetupError

KIND_INSTALL = "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
ISTIOCTL_INSTALL = "https://istio.io/latest/docs/setup/getting-started/#download"


def find_tool(name: str, purpose: str, install: str) -> str:
    """The path of a CLI on ``PATH``.

    Raises:
        MeshSetupError: It is missing; says what needs it and where to get it.
    """
    path = shutil.which(name)
    if path is None:
        raise MeshSetupError(
            f"{purpose} needs the '{name}' command, which is not on PATH. Install it ({install}), or drop "
            "--mesh-create and point --mesh-context at an existing cluster with Istio"
        )
    return path


def run_tool(argv: Sequence[str], *, timeout: float, what: str) -> str:
    """Run a CLI; return its stdout.

    Raises:
        MeshSetupError: It failed or timed out; the message holds the command and its stderr.
    """
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MeshSetupError(f"{what}: '{' '.join(argv)}' did not finish within {timeout:g}s") from exc
    except OSError as exc:
        raise MeshSetupError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise MeshSetupError(
            f"{what}: '{' '.join(argv)}' failed with exit code {proc.returncode}", log_tail=proc.stderr.strip()
        )
    return proc.stdout


def ensure_kind_cluster(name: str, log: Callable[[str], None], *, kubeconfig: Path | None = None) -> bool:
    """Create Kind cluster ``name`` unless it exists (its kube context is ``kind-<name>``).

    Returns:
        ``True`` when it was created, ``False`` when an existing cluster is reused.

    Raises:
        MeshSetupError: ``kind`` is missing or failed.
    """
    kind = find_tool("kind", "--mesh-create", KIND_INSTALL)
    clusters = run_tool([kind, "get", "clusters"], timeout=60, what="listing Kind clusters").split()
    if name in clusters:
        log(f"meshcheck: reusing Kind cluster {name!r}")
        return False
    argv = [kind, "create", "cluster", "--name", name, "--wait", "180s"]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    log(f"meshcheck: creating Kind cluster {name!r} (kind create cluster)")
    run_tool(argv, timeout=600, what=f"creating Kind cluster {name!r}")
    return True


def install_istio(context: str, log: Callable[[str], None], *, kubeconfig: Path | None = None) -> str:
    """Install Istio (default profile) with ``istioctl`` into kube context ``context``.

    Returns:
        The path of the ``istioctl`` used (its release directory holds the addons).

    Raises:
        MeshSetupError: ``istioctl`` is missing or failed.
    """
    istioctl = find_tool("istioctl", "--mesh-create (installing Istio)", ISTIOCTL_INSTALL)
    argv = [istioctl, "install", "-y", "--set", "profile=default", "--context", context]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    log(f"meshcheck: installing Istio into {context} (istioctl install)")
    run_tool(argv, timeout=900, what="installing Istio")
    return istioctl


def prometheus_addon_path(istioctl: str | None = None) -> Path:
    """``samples/addons/prometheus.yaml`` of the Istio release (``$ISTIO_HOME`` or beside ``istioctl``).

    Raises:
        MeshSetupError: Not found; says where it was looked for.
    """
    roots: list[Path] = []
    if os.environ.get("ISTIO_HOME"):
        roots.append(Path(os.environ["ISTIO_HOME"]))
    tool = istioctl or shutil.which("istioctl")
    if tool:
        roots.append(Path(tool).resolve().parent.parent)
    for root in roots:
        candidate = root / "samples" / "addons" / "prometheus.yaml"
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(r / "samples/addons/prometheus.yaml") for r in roots) or "nowhere (no istioctl)"
    raise MeshSetupError(
        f"--mesh-create cannot find Istio's Prometheus addon (looked at {looked}). Set ISTIO_HOME to the "
        "unpacked Istio release, or install the addon yourself: kubectl apply -f "
        "https://raw.githubusercontent.com/istio/istio/release-1.30/samples/addons/prometheus.yaml"
    )


def install_prometheus_addon(api_client: object, addon: Path, log: Callable[[str], None]) -> None:
    """Create the objects of Istio's Prometheus addon manifest.

    Raises:
        MeshSetupError: The API server refused one of them.
    """
    from kubernetes import utils

    log(f"meshcheck: installing Istio's Prometheus addon from {addon}")
    try:
        utils.create_from_yaml(api_client, str(addon))  # type: ignore[no-untyped-call]  # untyped library
    except utils.FailToCreateError as exc:
        conflicts = [e for e in exc.api_exceptions if getattr(e, "status", 0) != 409]
        if conflicts:
            raise MeshSetupError(f"installing the Prometheus addon from {addon} failed: {conflicts[0]}") from exc
