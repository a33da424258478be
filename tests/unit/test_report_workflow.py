"""The nightly workflow example in docs/ci: valid YAML with the steps its comments promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WORKFLOW = Path(__file__).parents[2] / "docs" / "ci" / "nightly.yml"


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _uses(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if "uses" in step]


def test_nightly_workflow_runs_both_contexts_and_keeps_the_reports() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc[True]  # YAML 1.1 reads the key "on" as a boolean
    assert "schedule" in triggers
    assert "workflow_dispatch" in triggers
    local, kind = doc["jobs"]["local"], doc["jobs"]["kind"]

    assert local["container"].endswith("bookworm")  # Debian, so apt's prometheus is Debian's package
    assert "apt-get install -y --no-install-recommends prometheus" in _runs(local)
    assert "pytest scenarios --mesh-report-dir reports" in _runs(local)

    assert any(s["uses"].startswith("helm/kind-action@") for s in _uses(kind))
    kind_runs = _runs(kind)
    assert "istioctl install" in kind_runs
    assert "samples/addons/prometheus.yaml" in kind_runs
    assert "pytest scenarios --mesh-context kind" in kind_runs

    for job in (local, kind):
        uploads = [s for s in _uses(job) if s["uses"].startswith("actions/upload-artifact@")]
        assert len(uploads) == 1
        assert uploads[0]["with"]["path"] == "reports/"
        assert uploads[0]["if"] == "${{ !cancelled() }}"  # failing nights keep their reports too
        assert "--mesh-baseline baseline/index.json" in _runs(job)
