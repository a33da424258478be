"""A report for a scenario that broke before it produced any data (for example the mesh did not start)."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.report.record import ScenarioRecord, report_stem

if TYPE_CHECKING:
    import pytest

    from pytest_meshcheck.settings import MeshSettings


def write_setup_error_record(item: pytest.Item, call: Any, settings: MeshSettings, run_id: str) -> Path:
    """Write the record and page of a scenario whose set-up failed; return the HTML path."""
    from pytest_meshcheck.report import write_scenario_report

    exc = call.excinfo.value if call.excinfo is not None else None
    doc = (getattr(item, "function", None) and item.function.__doc__) or item.name  # type: ignore[attr-defined]
    now = time.time()
    record = ScenarioRecord(
        nodeid=item.nodeid,
        title=str(doc).strip().splitlines()[0],
        outcome="error",
        message=f"set-up failed before the scenario ran: {type(exc).__name__}: {exc}",
        context={
            "mesh_context": settings.context,
            "istio_version": settings.istio_version or "default",
            "seed": settings.seed,
            "profile": settings.profile,
            "confidence": settings.confidence,
            "run_id": run_id,
        },
        started_at=now,
        ended_at=now,
        error={
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc))[-4000:] if exc is not None else "",
        },
        report_path=f"{report_stem(item.nodeid)}.html",
    )
    return write_scenario_report(record, settings.report_dir)
