"""Process checks the residue tests share: is a PID alive, what are its children, wait for it to die."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Running and not a zombie (an exited process nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def children(pid: int) -> set[int]:
    """Live direct children of ``pid`` (from /proc)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields after the last ')' are fixed.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def wait_dead(pid: int, timeout: float = 3.0) -> bool:
    """Poll until ``pid`` is gone; return whether it went within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False
