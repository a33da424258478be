"""A private Prometheus server that scrapes the local mesh every 250 ms.

Prometheus hands discovered targets to its scrape manager on a 5 s tick, so the first sample of any
target lands about 5.5 s after Prometheus starts (measured, ``shared/notes/prometheus-local.md``). The
mesh therefore starts Prometheus first, lets workloads and Envoy start meanwhile, and hands targets over
through a ``file_sd`` file once their ports are known.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import yaml

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError
from pytest_meshcheck.local.process import ManagedProcess, ProcessGroup

PROMETHEUS_BIN_ENV = "PYTEST_MESHCHECK_PROMETHEUS_BIN"
# How often every target is scraped. A scenario waits for a scrape after its traffic before it reads a
# counter (``Prom.wait_scraped_after``), on average half this interval, several times per scenario.
# Measured with the seed topology under load (bench/bench_scenarios.py, docs/explanation/suite-time.md):
# the slowest scrape took 29 ms, and Prometheus used 4.9 % of a core instead of 1.4 % at 1 s.
SCRAPE_INTERVAL = "250ms"
# The caller's sidecar is scraped more often: nearly every scenario waits for it at its window's start and end
# (``Prom.wait_scraped_after``), twice per scenario. Its scrape takes about 5 ms of its admin thread (7 ms at
# most, measured under a burst of 300 requests), about 5 % of that thread at this interval; Envoy's worker,
# which serves the traffic, is not the thread that answers it. Set per target with Prometheus'
# ``__scrape_interval__`` label.
FAST_SCRAPE_INTERVAL = "100ms"
INSTALL_HINT = "install Debian's package (sudo apt-get install -y prometheus) or set $" + PROMETHEUS_BIN_ENV


def find_prometheus(explicit: str | None = None) -> Path:
    """Locate the Prometheus binary: ``explicit``, ``$PYTEST_MESHCHECK_PROMETHEUS_BIN``, then ``PATH``.

    Raises:
        MeshSetupError: Not found, with how to install it.
    """
    candidate = explicit or os.environ.get(PROMETHEUS_BIN_ENV)
    if candidate:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise MeshSetupError(f"Prometheus binary {candidate!r} does not exist or is not executable; {INSTALL_HINT}")
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None)
    if not found:
        raise MeshSetupError(f"Prometheus binary not found on PATH; {INSTALL_HINT}")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free port.

    Prometheus cannot report a port it picked itself, so this is the one place where a port is chosen
    before binding; :meth:`PrometheusServer.start` retries with a new port if another process wins the race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """One Prometheus process with its own config, data directory and file-discovered targets."""

    def __init__(self, group: ProcessGroup, *, binary: Path, scrape_interval: str | None = None) -> None:
        self.group = group
        self.binary = binary
        self.dir = group.work_dir / "prometheus"
        self.targets_file = self.dir / "targets.json"
        self.scrape_interval = scrape_interval or SCRAPE_INTERVAL
        self.port = 0
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.set_targets({})
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "meshcheck",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "honor_labels": True,
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def set_targets(self, targets: Mapping[str, tuple[str, Mapping[str, str]]]) -> None:
        """Replace the scrape targets: ``{name: (host:port, labels)}``; each target's path is in its labels.

        A label ``__metrics_path__`` selects the path (``/stats/prometheus`` for Envoy).
        """
        groups = [
            {"targets": [address], "labels": {"meshcheck_target": name, **dict(labels)}}
            for name, (address, labels) in targets.items()
        ]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)

    def start(self) -> None:
        """Start the process; do not wait for it (see :meth:`wait_ready`).

        Raises:
            MeshSetupError: The binary is missing or cannot run.
        """
        config = self._write_config()
        self.port = free_port()
        self.process = self.group.start(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
                "--web.enable-lifecycle",
            ],
        )

    def wait_ready(self, timeout: float = 10.0, retries: int = 3) -> None:
        """Wait for ``/-/ready``; restart on a new port if another process took ours.

        Raises:
            MeshSetupError: Prometheus exited, with its log tail.
            MeshTimeoutError: It never became ready.
        """
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if not self.process.running():
                    tail = self.process.log_tail()
                    if "address already in use" in tail and retries > 0:
                        self.start()
                        return self.wait_ready(max(0.5, deadline - time.monotonic()), retries - 1)
                    raise MeshSetupError(
                        f"Prometheus exited with code {self.process.popen.returncode} during start-up",
                        log_tail=tail,
                        log_path=self.process.log_path,
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/-/ready").status_code == 200:
                        return None
                time.sleep(0.01)
        raise MeshTimeoutError(f"Prometheus at {self.url} was not ready after {timeout}s")

    def wait_scraped(
        self, names: Sequence[str], timeout: float = 15.0, *, cancel: threading.Event | None = None
    ) -> float:
        """Wait until every named target has been scraped successfully at least once (``up == 1``).

        Args:
            names: Target names (the ``meshcheck_target`` label).
            timeout: Seconds to wait at most.
            cancel: When set (from another thread), stop waiting within 0.1 s: a caller shutting down
                must not wait for the first scrape, which comes ~5.5 s after start.

        Returns:
            Seconds waited.

        Raises:
            MeshTimeoutError: A target was not scraped within ``timeout``, or ``cancel`` was set first.
        """
        start = time.monotonic()
        missing: set[str] = set(names)
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - start < timeout:
                if cancel is not None and cancel.is_set():
                    raise MeshTimeoutError(f"stopped waiting for Prometheus at {self.url} to scrape {sorted(missing)}")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    data = client.get(self.url + "/api/v1/query", params={"query": "up == 1"}).json()
                    seen = {r["metric"].get("meshcheck_target") for r in data["data"]["result"]}
                    missing = set(names) - seen
                    if not missing:
                        return time.monotonic() - start
                if cancel is not None:
                    cancel.wait(0.1)
                else:
                    time.sleep(0.1)
        raise MeshTimeoutError(
            f"Prometheus at {self.url} had not scraped {sorted(missing)} after {timeout}s; "
            f"see targets at {self.url}/targets"
        )
