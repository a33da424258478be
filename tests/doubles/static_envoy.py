"""One real Envoy from a static bootstrap, for exercising the load engine in tests and benchmarks.

Usage::

    with UpstreamProcess(instance="u0") as up, EnvoyProcess(bootstrap(upstream_port=up.port)) as envoy:
        result = run_load(envoy.url, ClosedLoop(concurrency=8, duration=1, max_requests=1000))
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError
from pytest_meshcheck.local.envoy import find_envoy
from tests.doubles import child

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
CLUSTER = "outbound|8080||upstream"
_NO_LIMITS = {"max_connections": 10000, "max_pending_requests": 10000, "max_requests": 10000}


def bootstrap(
    *,
    upstream_port: int | None = None,
    body: str = "ok",
    route_timeout: str = "15s",
    circuit_breakers: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Build a static Envoy bootstrap with an HTTP/1.1 listener on an OS-assigned port.

    Args:
        upstream_port: Route to one upstream on 127.0.0.1 at this port. ``None`` answers every request
            with a ``direct_response`` 200, so a benchmark measures the client and Envoy, not a backend.
        body: Body of the direct response.
        route_timeout: Envoy route timeout when an upstream is used.
        circuit_breakers: Cluster circuit-breaker thresholds (``max_requests`` ...); default: 10000 each, so
            that they never shape the traffic.

    Returns:
        The bootstrap as a dict, ready for YAML.
    """
    route: dict[str, Any]
    if upstream_port is None:
        route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}
    else:
        route = {"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "timeout": route_timeout}}
    hcm = {
        "@type": _HCM,
        "stat_prefix": "ingress_http",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "include_request_attempt_count": True,
                    "include_attempt_count_in_response": True,
                    "routes": [route],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    clusters: list[dict[str, Any]] = []
    if upstream_port is not None:
        endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
        clusters.append(
            {
                "name": CLUSTER,
                "connect_timeout": "1s",
                "type": "STATIC",
                "circuit_breakers": {"thresholds": [circuit_breakers or _NO_LIMITS]},
                "load_assignment": {"cluster_name": CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]},
            }
        )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


class EnvoyProcess:
    """One Envoy (``--concurrency 1``) started from a bootstrap dict; a context manager.

    Attributes:
        admin: Admin base URL, such as ``http://127.0.0.1:40123``.
        port: The listener's bound port.
        url: The listener base URL.
    """

    def __init__(self, config: dict[str, Any], *, concurrency: int = 1, startup_timeout: float = 15.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="meshcheck-load-envoy-"))
        cfg = self._dir / "envoy.yaml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        self._admin_file = self._dir / "admin.txt"
        self.log_path = self._dir / "envoy.log"
        args = [
            str(find_envoy()),  # the Envoy the local mesh uses
            "-c",
            str(cfg),
            "--concurrency",
            str(concurrency),
            "--disable-hot-restart",
            "--admin-address-path",
            str(self._admin_file),
            "-l",
            "warning",
            "--log-path",
            str(self.log_path),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.admin, self.port = self._wait_ready(startup_timeout)
        except BaseException:
            child.stop(self.proc)
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def _wait_ready(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MeshSetupError(
                    f"envoy exited with code {self.proc.returncode} during start-up",
                    log_tail=self._log_tail(),
                    log_path=self.log_path,
                )
            address = self._admin_file.read_text().strip() if self._admin_file.exists() else ""
            if address:
                admin = f"http://{address}"
                try:
                    status, _ = child.http_get(f"{admin}/ready")
                    if status == 200:
                        _, listeners = child.http_get(f"{admin}/listeners?format=json")
                        sock = json.loads(listeners)["listener_statuses"][0]["local_address"]["socket_address"]
                        return admin, int(sock["port_value"])
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.01)
        raise MeshTimeoutError(f"envoy not ready after {timeout}s", log_tail=self._log_tail(), log_path=self.log_path)

    def stop(self) -> None:
        """Stop Envoy by PID and remove its scratch directory."""
        child.stop(self.proc)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
