"""End of session, on the xdist controller only: the index page and the terminal summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_meshcheck.settings import MeshSettings

SUMMARY_KEY = pytest.StashKey[list[str]]()


def write_run_index(config: pytest.Config, settings: MeshSettings, run_id: str) -> None:
    """Gather this run's records (workers wrote them), write ``index.html``, keep the summary lines."""
    from pytest_meshcheck.report import compare_baseline, load_records, summary_lines, write_index

    records = [r for r in load_records(settings.report_dir) if r.context.get("run_id") == run_id]
    if not records:
        return
    regressions = compare_baseline(records, settings.baseline) if settings.baseline else []
    # ``mesh_context`` is the key the index shows as "Mesh context" (under ``context`` it was listed twice).
    # No ``istio_version``: the index shows the version each scenario's mesh resolved, not the setting,
    # which is empty unless given.
    run_info = {
        "run_id": run_id,
        "mesh_context": settings.context,
        "profile": settings.profile,
        "confidence": str(settings.confidence),
        "seed": str(settings.seed),
    }
    index = write_index(settings.report_dir, records, regressions=regressions, run_info=run_info)
    config.stash[SUMMARY_KEY] = summary_lines(records, index, regressions)
