"""The ready line: the one line an echo process prints on stdout once both ports listen.

``MESHCHECK_READY {"port": P, "admin_port": A, "pid": N}``; a workload host adds
``"instances": {"<name>": <port>, ...}`` (``port`` is then its first instance's). The workload writes it with
:func:`ready_line`; whoever started the process (the local mesh, the tests) reads it with
:func:`parse_ready_line`, so the format lives in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pytest_meshcheck.errors import MeshSetupError

READY_PREFIX = "MESHCHECK_READY "


@dataclass(frozen=True)
class ReadyInfo:
    """What an echo process announces once both ports listen."""

    port: int
    admin_port: int
    pid: int
    instances: dict[str, int] = field(default_factory=dict)


def ready_line(info: ReadyInfo) -> str:
    """The line to print, newline included."""
    doc: dict[str, object] = {"port": info.port, "admin_port": info.admin_port, "pid": info.pid}
    if info.instances:
        doc["instances"] = info.instances
    return READY_PREFIX + json.dumps(doc) + "\n"


def parse_ready_line(line: str | bytes) -> ReadyInfo:
    """Parse ``MESHCHECK_READY {"port": P, "admin_port": A, "pid": N}`` (and a host's ``instances``).

    Raises:
            MeshSetupError: The line is not a ready line.
    """
    text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()
    if not text.startswith(READY_PREFIX):
        raise MeshSetupError(f"echo workload printed {text!r} instead of its ready line {READY_PREFIX}{{...}}")
    try:
        doc = json.loads(text[len(READY_PREFIX) :])
        instances = {str(k): int(v) for k, v in dict(doc.get("instances", {})).items()}
        return ReadyInfo(
            port=int(doc["port"]), admin_port=int(doc["admin_port"]), pid=int(doc["pid"]), instances=instances
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MeshSetupError(f"echo workload ready line {text!r} is malformed: {exc}") from None
