"""``--mesh-create`` drives the ``kind`` and ``istioctl`` CLIs; here they are stand-in scripts on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.bootstrap import ensure_kind_cluster, install_istio, prometheus_addon_path


def _tool(bin_dir: Path, name: str, body: str) -> Path:
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> {bin_dir / "calls.log"}\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))
    monkeypatch.delenv("ISTIO_HOME", raising=False)
    return d


def _calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_missing_kind_names_what_needs_it_and_where_to_get_it(bin_dir: Path) -> None:
    with pytest.raises(MeshSetupError) as info:
        ensure_kind_cluster("ci", print)
    text = str(info.value)
    assert "--mesh-create needs the 'kind' command, which is not on PATH" in text
    assert "kind.sigs.k8s.io" in text


def test_an_existing_cluster_is_reused(bin_dir: Path) -> None:
    _tool(bin_dir, "kind", 'if [ "$1" = get ]; then printf "other\\nci\\n"; fi')
    lines: list[str] = []
    assert ensure_kind_cluster("ci", lines.append) is False
    assert _calls(bin_dir) == ["get clusters"]
    assert lines == ["meshcheck: reusing Kind cluster 'ci'"]


def test_a_missing_cluster_is_created(bin_dir: Path, tmp_path: Path) -> None:
    _tool(bin_dir, "kind", 'if [ "$1" = get ]; then printf "other\\n"; fi')
    assert ensure_kind_cluster("ci", print, kubeconfig=tmp_path / "kc") is True
    assert _calls(bin_dir) == ["get clusters", f"create cluster --name ci --wait 180s --kubeconfig {tmp_path / 'kc'}"]


def test_a_failing_tool_shows_its_stderr(bin_dir: Path) -> None:
    _tool(bin_dir, "kind", 'echo "docker is not running" >&2; exit 1')
    with pytest.raises(MeshSetupError) as info:
        ensure_kind_cluster("ci", print)
    assert "listing Kind clusters" in str(info.value)
    assert "exit code 1" in str(info.value)
    assert "docker is not running" in str(info.value)


def test_istio_install_uses_the_context(bin_dir: Path) -> None:
    _tool(bin_dir, "istioctl", "exit 0")
    install_istio("kind-ci", print)
    assert _calls(bin_dir) == ["install -y --set profile=default --context kind-ci"]


def test_prometheus_addon_is_found_in_the_istio_release(
    bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MeshSetupError, match="cannot find Istio's Prometheus addon"):
        prometheus_addon_path()
    release = tmp_path / "istio-1.30.3"
    (release / "bin").mkdir(parents=True)
    (release / "samples/addons").mkdir(parents=True)
    (release / "samples/addons/prometheus.yaml").write_text("kind: List\n")
    istioctl = _tool(release / "bin", "istioctl", "exit 0")
    monkeypatch.setenv("PATH", f"{release / 'bin'}{os.pathsep}{bin_dir}")
    assert prometheus_addon_path(str(istioctl)) == release / "samples/addons/prometheus.yaml"
    assert prometheus_addon_path() == release / "samples/addons/prometheus.yaml"
