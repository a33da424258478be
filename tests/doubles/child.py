"""What the process doubles share: stopping a child by PID, and one plain GET.

Every process a double starts binds 127.0.0.1 on an OS-assigned port, is tracked by PID and is stopped by
PID (SIGTERM, then SIGKILL). Readiness is probed, never slept for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request


def http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    """GET ``url``; its status and body text."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status), resp.read().decode()


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop ``proc`` by PID: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
