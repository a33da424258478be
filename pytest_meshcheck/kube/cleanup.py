"""Remove what runs created, selected only by our labels, never anything else.

A run's objects all live in its namespace ``meshcheck-<run id>``, so deleting that namespace removes
them; labelled policy objects of the run found in other namespaces (none by design) are deleted too.
A run killed before its clean-up (SIGKILL, a lost CI runner) leaves its namespace behind: the next run
finds it by the ``managed-by`` label and removes it once its heartbeat annotation (refreshed every
minute while the run is alive) is older than ``stale_after``, or at once when its owner process on
this host is gone. Namespaces kept with ``--mesh-keep`` are reported, not removed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.client import CUSTOM_PLURALS, KubeClient, KubeForbidden, KubeNotFound
from pytest_meshcheck.kube.settings import (
    HEARTBEAT_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_ANNOTATION,
    RUN_ID_LABEL,
)

KEEP_ANNOTATION = "meshcheck.io/keep"
HEARTBEAT_INTERVAL = 60.0
_ISTIO_KINDS = tuple(("networking.istio.io", "v1", kind) for kind in CUSTOM_PLURALS)


def owner_tag() -> str:
    """``<host>:<pid>`` of this process, stored on the namespace it creates."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Leftover:
    """A namespace of another run that may be removed, and why."""

    namespace: str
    run_id: str
    reason: str


def _created(meta: dict[str, Any]) -> float:
    stamp = str(meta.get("creationTimestamp", ""))
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def classify(
    namespace: dict[str, Any],
    *,
    current_run_id: str,
    now: float,
    stale_after: float,
    host: str,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> tuple[Leftover | None, str]:
    """Decide about one managed namespace: a leftover to remove, or a note on why it stays.

    Returns:
        ``(leftover, "")`` to remove it, or ``(None, note)`` to keep it (``note`` empty for our own).
    """
    meta = namespace.get("metadata") or {}
    name = str(meta.get("name"))
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    run_id = str(labels.get(RUN_ID_LABEL, ""))
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or run_id == current_run_id:
        return None, ""
    if (namespace.get("status") or {}).get("phase") == "Terminating":
        return None, f"{name}: already being deleted"
    if annotations.get(KEEP_ANNOTATION) == "true":
        return None, f"{name}: kept by --mesh-keep (remove it with 'kubectl delete namespace {name}')"
    owner = str(annotations.get(OWNER_ANNOTATION, ""))
    owner_host, _, owner_pid = owner.rpartition(":")
    if owner_host == host and owner_pid.isdigit() and not pid_alive(int(owner_pid)):
        return Leftover(name, run_id, f"its run (pid {owner_pid} on this host) is gone"), ""
    try:
        beat = float(annotations.get(HEARTBEAT_ANNOTATION, ""))
    except ValueError:
        beat = _created(meta)
    age = now - beat
    if age > stale_after:
        return Leftover(name, run_id, f"no heartbeat for {age / 60:.0f} min (owner {owner or 'unknown'})"), ""
    return None, f"{name}: run {run_id} of {owner or 'unknown'} is alive (heartbeat {age:.0f}s ago)"


def sweep_leftovers(
    client: KubeClient,
    *,
    current_run_id: str,
    stale_after: float,
    log: Callable[[str], None],
    now: float | None = None,
) -> list[str]:
    """Remove leftover namespaces of killed runs (and their labelled objects elsewhere).

    Returns:
        One line per object removed, such as ``namespace meshcheck-1a2b3c4d (run 1a2b3c4d): no heartbeat for 42 min``.
    """
    now = time.time() if now is None else now
    host = socket.gethostname()
    removed: list[str] = []
    for ns in client.list_namespaces(f"{MANAGED_BY_LABEL}={MANAGED_BY}"):
        leftover, note = classify(ns, current_run_id=current_run_id, now=now, stale_after=stale_after, host=host)
        if note:
            log(f"meshcheck: leaving namespace {note}")
        if leftover is None:
            continue
        removed += delete_run_objects(client, leftover.run_id, leftover.namespace, log)
        if client.delete_namespace(leftover.namespace):
            line = f"namespace {leftover.namespace} (run {leftover.run_id}): {leftover.reason}"
            removed.append(line)
            log(f"meshcheck: removed leftover {line}")
    return removed


def delete_run_objects(client: KubeClient, run_id: str, namespace: str, log: Callable[[str], None]) -> list[str]:
    """Delete the run's labelled Istio objects outside its namespace (the namespace deletion takes the rest).

    A kube context that may not list them cluster-wide only loses this extra safety net.
    """
    removed: list[str] = []
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_ID_LABEL}={run_id}"
    for group, version, kind in _ISTIO_KINDS:
        try:
            items = client.list_custom(group, version, CUSTOM_PLURALS[kind], selector)
        except (KubeForbidden, KubeNotFound):
            continue
        except MeshSetupError as exc:
            log(f"meshcheck: could not list {kind}s of run {run_id}: {exc}")
            continue
        for item in items:
            meta = item.get("metadata") or {}
            ns, name = str(meta.get("namespace")), str(meta.get("name"))
            if ns == namespace:
                continue
            if client.delete_custom(f"{group}/{version}", kind, ns, name):
                removed.append(f"{kind} {ns}/{name} (run {run_id})")
    return removed


def delete_run(client: KubeClient, run_id: str, namespace: str, log: Callable[[str], None]) -> list[str]:
    """Remove everything a run created: its labelled objects elsewhere, then its namespace.

    Returns:
        One line per object removed.
    """
    removed = delete_run_objects(client, run_id, namespace, log)
    if client.delete_namespace(namespace):
        removed.append(f"namespace {namespace}")
    return removed


class Heartbeat:
    """Refreshes the run namespace's heartbeat annotation every :data:`HEARTBEAT_INTERVAL` seconds."""

    def __init__(self, client: KubeClient, namespace: str, interval: float = HEARTBEAT_INTERVAL) -> None:
        self._client = client
        self._namespace = namespace
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {namespace}", daemon=True)

    def start(self) -> Heartbeat:
        """Start beating."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(MeshSetupError):
                self._client.patch_namespace_annotations(self._namespace, {HEARTBEAT_ANNOTATION: f"{time.time():.0f}"})

    def stop(self) -> None:
        """Stop beating (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
