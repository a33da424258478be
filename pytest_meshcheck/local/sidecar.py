"""One Envoy sidecar of the local mesh: its bootstrap, xDS files, process, admin API and config pushes.

The local mesh runs several: the *client* sidecar (where the load generator and the gateway send
requests) and, as Istio injects one per pod, a sidecar for every pod of a service that calls others. All
get the same istiod-faithful clusters and routes, so connection pools, outlier detection and retry state
are per pod, as in a real mesh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.local import bootstrap as bs
from pytest_meshcheck.local.envoy import CDS_FILE, EnvoyAdmin, XdsFiles, XdsSnapshot, rds_file
from pytest_meshcheck.local.process import ManagedProcess, ProcessGroup
from pytest_meshcheck.translate import delimited_stat_prefix, http_filters, istio_stats_config

Resources = tuple[list[dict[str, Any]], list[dict[str, Any]]]

#: How often Envoy writes its buffered access logs to disk (``--file-flush-interval-msec``). Every read of a
#: log after the traffic waits this long plus ``LOG_FLUSH_SLACK``: short, because the reports and the checks
#: on response flags wait for it after every scenario; writing a few lines 20 times a second costs nothing.
LOG_FLUSH_INTERVAL = 0.05
#: Room for the flush thread's own scheduling on a loaded machine.
LOG_FLUSH_SLACK = 0.05


def wait_log_flushed(end: float) -> None:
    """Sleep until Envoy has flushed what its sidecars logged up to the unix time ``end``.

    A bound from Envoy's flush interval, not evidence: nothing in the log says it is complete.
    """
    wait = end + LOG_FLUSH_INTERVAL + LOG_FLUSH_SLACK - time.time()
    if wait > 0:
        time.sleep(wait)


class Sidecar:
    """An Envoy process with file-based xDS; :meth:`launch`, then :meth:`wait_ready`, then :meth:`push`.

    Args:
        group: The process group that owns the process (and stops it by PID).
        name: Process and file name (``envoy`` for the client, ``envoy-<pod>`` for a pod's sidecar).
        node_id: Envoy node id, shaped as istiod's (``sidecar~IP~POD.NS~NS.svc.cluster.local``).
        istio_version: Whose stat prefixes and stats inclusion list to follow.
        gateway_port: Also listen as the ingress gateway on this port (the client sidecar only).
    """

    def __init__(
        self,
        group: ProcessGroup,
        name: str,
        node_id: str,
        istio_version: IstioVersion,
        *,
        gateway_port: int | None = None,
    ) -> None:
        self.group = group
        self.name = name
        self.node_id = node_id
        self.istio_version = istio_version
        self.gateway_port = gateway_port
        self.dir = group.work_dir / name
        self.xds = XdsFiles(self.dir / "xds")
        self.process: ManagedProcess | None = None
        self.admin: EnvoyAdmin | None = None
        self.ports: dict[str, int] = {}
        self._initial: dict[str, str] = {}

    @property
    def access_log_path(self) -> Path:
        """The sidecar's JSON access log (flushed every ``LOG_FLUSH_INTERVAL``)."""
        return self.dir / "access.log"

    @property
    def attempts_log_path(self) -> Path:
        """The router's per-attempt JSON log: one line per upstream attempt, retries included."""
        return bs.attempt_log_path(self.access_log_path)

    @property
    def outlier_log_path(self) -> Path:
        """Envoy's outlier-detection event log: one JSON line per ejection and return of a host."""
        return self.dir / bs.OUTLIER_LOG_NAME

    def outlier_events(self, start: float, end: float) -> list[Any]:
        """The outlier-detection events this sidecar logged in ``[start, end]``.

        Envoy flushes the file every ``LOG_FLUSH_INTERVAL``: read it after :func:`wait_log_flushed` ``end``.

        Returns:
            :class:`pytest_meshcheck.metrics.outlier_events.OutlierEvent` items, in the order logged.
        """
        from pytest_meshcheck.metrics.outlier_events import read_events

        return list(read_events(self.outlier_log_path, self.name, start, end))

    def log_records(self, start: float, end: float) -> list[Any]:
        """The calls (``access.log``) and attempts (``attempts.log``) logged here that started in ``[start, end]``.

        Envoy flushes both files every ``LOG_FLUSH_INTERVAL``: read them after :func:`wait_log_flushed` ``end``.

        Returns:
            :class:`pytest_meshcheck.metrics.attempts.LogRecord` items, calls first.
        """
        from pytest_meshcheck.metrics.attempts import read_records

        return [
            *read_records(self.access_log_path, "call", self.name, start, end),
            *read_records(self.attempts_log_path, "attempt", self.name, start, end),
        ]

    def launch(self, binary: Path, resources: Resources) -> None:
        """Write the bootstrap and first xDS files, and start Envoy without waiting for it."""
        clusters, routes = resources
        self._initial = self.xds.write(clusters=clusters, routes=routes)
        filters = http_filters()
        # istiod's outbound prefix is outbound_0.0.0.0_<port>; one listener serves every port here.
        listeners = [
            bs.http_listener(
                bs.OUTBOUND_LISTENER,
                0,
                bs.OUTBOUND_ROUTES,
                self.xds.source(rds_file(bs.OUTBOUND_ROUTES)),
                filters,
                self.access_log_path,
                delimited_stat_prefix("outbound_0.0.0.0_0", self.istio_version),
            )
        ]
        if self.gateway_port is not None:
            listeners.append(
                bs.http_listener(
                    bs.GATEWAY_LISTENER,
                    self.gateway_port,
                    bs.GATEWAY_ROUTES,
                    self.xds.source(rds_file(bs.GATEWAY_ROUTES)),
                    filters,
                    self.access_log_path,
                    delimited_stat_prefix(f"gateway_0.0.0.0_{self.gateway_port}", self.istio_version),
                )
            )
        config = bs.bootstrap(
            node_id=self.node_id,
            cds_source=self.xds.source(CDS_FILE),
            listeners=listeners,
            stats_config=istio_stats_config(self.istio_version),
            outlier_event_log=self.outlier_log_path,
        )
        config_path = self.dir / "envoy.json"
        config_path.write_text(json.dumps(config, indent=1))
        admin_path = self.dir / "admin.address"
        self.process = self.group.start(
            self.name,
            [
                str(binary), "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart",
                "--admin-address-path", str(admin_path), "-l", "warning",
                "--file-flush-interval-msec", str(round(LOG_FLUSH_INTERVAL * 1000)),
            ],
        )  # fmt: skip

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until Envoy serves its admin API and runs the first config; read its listener ports.

        Raises:
            MeshSetupError: Envoy exited during start-up (with its log tail).
            MeshTimeoutError: Not ready within ``timeout``.
        """
        proc = self.process
        assert proc is not None
        admin_path = self.dir / "admin.address"
        deadline = time.monotonic() + timeout
        probe: EnvoyAdmin | None = None
        try:
            while time.monotonic() < deadline:
                if not proc.running():
                    raise MeshSetupError(
                        f"Envoy ({self.name}) exited with code {proc.popen.returncode} during start-up",
                        log_tail=proc.log_tail(),
                        log_path=proc.log_path,
                    )
                if probe is None and admin_path.exists():
                    address = admin_path.read_text().strip()
                    if address:
                        probe = EnvoyAdmin(address)
                if probe is not None and probe.ready():
                    self.admin, probe = probe, None
                    break
                time.sleep(0.005)
        finally:
            if probe is not None:
                probe.close()
        if self.admin is None:
            raise MeshTimeoutError(
                f"Envoy ({self.name}) not ready after {timeout}s", log_tail=proc.log_tail(), log_path=proc.log_path
            )
        self.admin.wait_converged(self._initial, rejected_before=0, log_path=proc.log_path)
        self.ports = self.admin.listener_ports()

    @property
    def url(self) -> str:
        """URL of the outbound listener."""
        return f"http://127.0.0.1:{self.ports[bs.OUTBOUND_LISTENER]}"

    def snapshot(self) -> XdsSnapshot:
        """What the xDS files hold now, for :meth:`rollback`."""
        return self.xds.snapshot()

    def push(self, resources: Resources) -> None:
        """Write ``resources`` as a new xDS version and wait until Envoy runs it.

        Raises:
            MeshSetupError: Envoy refused the update (its reason quoted).
            MeshTimeoutError: Envoy did not converge.
        """
        if self.admin is None:
            raise MeshSetupError("the local mesh is not running; use it inside 'with LocalMesh(...)'")
        clusters, routes = resources
        rejected = self.admin.rejected_updates()
        log_path = self.process.log_path if self.process is not None else None
        names = {c["name"] for c in clusters}
        union = [*clusters, *(c for c in self.xds.current_clusters() if c["name"] not in names)]
        # Envoy re-reads every file of the watched directory on any change, in no set order, so a route
        # could run before the cluster it names exists, or after the cluster it still names is gone: both
        # fail requests with 503 NC. Hence three steps, each waiting for Envoy: add and change clusters
        # (keeping the old ones), switch the routes, then remove the clusters no route names any more.
        # istiod gets the same ordering from ADS.
        steps: Sequence[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = (
            (union, []),
            (union, routes),
            (clusters, []),
        )
        for step_clusters, step_routes in steps:
            before = dict(self.xds.expected)
            expected = self.xds.write(clusters=step_clusters, routes=step_routes)
            if expected != before:
                self.admin.wait_converged(expected, rejected_before=rejected, log_path=log_path)

    def rollback(self, snapshot: XdsSnapshot) -> None:
        """Make Envoy run the config of ``snapshot`` again after a refused or interrupted update."""
        if self.admin is None:
            return
        expected = self.xds.restore(snapshot)
        self.admin.wait_converged(expected)

    def close(self) -> None:
        """Close the admin client (the process group stops the process)."""
        if self.admin is not None:
            self.admin.close()
            self.admin = None


def scrape_labels(sidecar: Sidecar, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The Prometheus target of ``sidecar``: its admin address and labels, plus the stats path."""
    assert sidecar.admin is not None
    return sidecar.admin.url.removeprefix("http://"), {"__metrics_path__": "/stats/prometheus", **labels}
