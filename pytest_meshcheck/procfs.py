"""What ``/proc`` says about a process: its state and kernel start time, which tell a PID from its reuse.

Standard library only: the echo workload ships it (to watch its parent), and the local mesh uses it for
its children and for sweeping leftovers of killed runs.
"""

from __future__ import annotations

import os


def proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and kernel start time (clock ticks since boot) of ``pid``.

    Returns:
        ``("X", 0)`` when ``pid`` does not exist, ``None`` where ``/proc`` cannot tell (there is no
        ``/proc``, or it may not be read).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return ("X", 0) if os.path.isdir("/proc/self") else None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after the last ')' are fixed.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks, or ``None`` if it does not exist or ``/proc`` cannot tell."""
    stat = proc_stat(pid)
    return None if stat is None or stat[0] == "X" else stat[1]


def proc_alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` exists and is not a zombie; with ``started``, also that it is the process started then.

    ``False`` where ``/proc`` cannot tell.
    """
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return started is None or stat[1] == started
