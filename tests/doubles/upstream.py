"""A counting HTTP/1.1 upstream in a child process (:mod:`tests.doubles.upstream_server`); a context manager."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError
from tests.doubles import child

# Run by path, not with -m: the child then needs neither this repository on sys.path nor site-packages.
SERVER = Path(__file__).with_name("upstream_server.py")


class UpstreamProcess:
    """The stdlib upstream of :mod:`tests.doubles.upstream_server` in a child process; a context manager.

    Attributes:
        port: The bound port.
        url: The base URL (control endpoints ``/__stall``, ``/__stats``, ``/__clear`` live here).
    """

    def __init__(self, *, instance: str = "u0", delay: float = 0.0, startup_timeout: float = 10.0) -> None:
        args = [sys.executable, "-I", "-S", str(SERVER), "--instance", instance, "--delay", str(delay)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            self.port = self._read_port(startup_timeout)
        except BaseException:
            child.stop(self.proc)
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        # The child prints exactly one line, "port N", once it listens.
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                raise MeshTimeoutError(f"upstream did not report its port within {timeout}s")
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "port":
            raise MeshSetupError(f"upstream exited with code {self.proc.poll()} before listening")
        return int(line[1])

    def control(self, path: str) -> Any:
        """GET a control endpoint such as ``/__stats`` and return its JSON."""
        return json.loads(child.http_get(f"{self.url}{path}", timeout=5.0)[1])

    def stop(self) -> None:
        """Stop the upstream by PID."""
        child.stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> UpstreamProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
