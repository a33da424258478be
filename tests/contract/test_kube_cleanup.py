"""Leftovers of killed runs are found by label and removed, saying what; nothing else is touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.kube.cleanup import Heartbeat, classify, sweep_leftovers
from pytest_meshcheck.kube.client import KubeClient
from tests.doubles.fake_kube_api import FakeKubeAPI

NOW = 1_800_000_000.0
HOST = socket.gethostname()


def _ns(
    name: str, *, run: str | None, beat: float | None = None, owner: str = "", keep: bool = False
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "pytest-meshcheck", "meshcheck.io/run-id": run} if run else {}
    annotations = {}
    if beat is not None:
        annotations["meshcheck.io/heartbeat"] = f"{beat:.0f}"
    if owner:
        annotations["meshcheck.io/owner"] = owner
    if keep:
        annotations["meshcheck.io/keep"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, KubeClient]]:
    with FakeKubeAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        kube = KubeClient.connect("kind-kind", kubeconfig)
        try:
            yield api, kube
        finally:
            kube.close()


def _vs(name: str, ns: str, run: str | None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "pytest-meshcheck", "meshcheck.io/run-id": run} if run else {}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"hosts": ["x"]},
    }


def test_sweep_removes_only_stale_runs_and_says_why(client: tuple[FakeKubeAPI, KubeClient]) -> None:
    api, kube = client
    dead = _dead_pid()
    for obj in (
        _ns("meshcheck-old00001", run="old00001", beat=NOW - 7200, owner="ci-runner-7:4242"),
        _ns("meshcheck-dead0001", run="dead0001", beat=NOW - 5, owner=f"{HOST}:{dead}"),
        _ns("meshcheck-live0001", run="live0001", beat=NOW - 30, owner="other-host:1"),
        _ns("meshcheck-kept0001", run="kept0001", beat=NOW - 7200, keep=True),
        _ns("meshcheck-mine0001", run="mine0001", beat=NOW - 7200),
        _ns("meshcheck-lookalike", run=None),  # a user's namespace with our prefix but not our label
        _vs("stray", "default", "old00001"),  # a labelled object of a dead run outside its namespace
        _vs("users-own", "default", None),
        _vs("live-run-object", "default", "live0001"),
    ):
        kube.create(obj)
    notes: list[str] = []
    removed = sweep_leftovers(kube, current_run_id="mine0001", stale_after=600, log=notes.append, now=NOW)
    assert removed == [
        "VirtualService default/stray (run old00001)",
        "namespace meshcheck-old00001 (run old00001): no heartbeat for 120 min (owner ci-runner-7:4242)",
        f"namespace meshcheck-dead0001 (run dead0001): its run (pid {dead} on this host) is gone",
    ]
    assert api.namespaces() == [
        "default",
        "istio-system",
        "kube-system",
        "meshcheck-kept0001",
        "meshcheck-live0001",
        "meshcheck-lookalike",
        "meshcheck-mine0001",
    ]
    assert sorted(o["metadata"]["name"] for o in api.namespaced("virtualservices", "default")) == [
        "live-run-object",
        "users-own",
    ]
    assert any("meshcheck-kept0001: kept by --mesh-keep" in n for n in notes)
    assert any("meshcheck-live0001: run live0001 of other-host:1 is alive" in n for n in notes)
    # The listing used our label, so unlabelled namespaces were never even looked at.
    assert ("GET", "/api/v1/namespaces") in api.requests


def test_a_namespace_without_heartbeat_falls_back_to_its_creation_time() -> None:
    ns = _ns("meshcheck-x", run="x")
    ns["metadata"]["creationTimestamp"] = "2027-01-15T08:00:00Z"
    created = time.mktime(time.strptime("2027-01-15T08:00:00", "%Y-%m-%dT%H:%M:%S")) - time.timezone
    leftover, _ = classify(ns, current_run_id="y", now=created + 601, stale_after=600, host=HOST)
    assert leftover is not None
    assert leftover.reason.startswith("no heartbeat for 10 min")
    leftover, note = classify(ns, current_run_id="y", now=created + 599, stale_after=600, host=HOST)
    assert leftover is None
    assert "is alive" in note


def test_terminating_namespaces_are_left_to_finish() -> None:
    ns = _ns("meshcheck-t", run="t", beat=0)
    ns["status"] = {"phase": "Terminating"}
    assert classify(ns, current_run_id="y", now=NOW, stale_after=600, host=HOST) == (
        None,
        "meshcheck-t: already being deleted",
    )


def test_a_live_process_on_this_host_is_not_a_leftover() -> None:
    ns = _ns("meshcheck-me", run="me", beat=NOW - 5, owner=f"{HOST}:{os.getpid()}")
    leftover, _ = classify(ns, current_run_id="other", now=NOW, stale_after=600, host=HOST)
    assert leftover is None


def test_heartbeat_refreshes_the_namespace_annotation(client: tuple[FakeKubeAPI, KubeClient]) -> None:
    api, kube = client
    kube.create(_ns("meshcheck-beat0001", run="beat0001", beat=NOW - 7200))
    beat = Heartbeat(kube, "meshcheck-beat0001", interval=0.05).start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ns = api.snapshot()[("", "namespaces", "", "meshcheck-beat0001")]
            if float(ns["metadata"]["annotations"]["meshcheck.io/heartbeat"]) > time.time() - 60:
                break
            time.sleep(0.05)
    finally:
        beat.stop()
    assert float(ns["metadata"]["annotations"]["meshcheck.io/heartbeat"]) > time.time() - 60
    # A refreshed run is alive for the next run's sweep.
    leftover, _ = classify(ns, current_run_id="other", now=time.time(), stale_after=600, host=HOST)
    assert leftover is None
