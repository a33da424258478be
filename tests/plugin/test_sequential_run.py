"""``--mesh-sequential`` on the real local mesh: the claim is decided by the SPRT, the model by a
confidence sequence, and the run stops well before the fixed-sample plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_meshcheck.report.record import report_stem

pytestmark = [pytest.mark.envoy, pytest.mark.prometheus]
ROOT = Path(__file__).resolve().parents[2]
NODE = "scenarios/test_retries.py::test_two_retries_hide_most_503s"


def test_sequential_run_decides_the_claim_with_the_sprt_and_the_model_anytime(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", NODE, "-q", "-p", "no:cacheprovider", "--mesh-sequential"]
    cmd += ["--mesh-report-dir", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]

    record = json.loads((tmp_path / f"{report_stem(NODE)}.json").read_text())
    checks = {c["name"]: c for c in record["checks"]}
    claim = checks["claim: success ratio at least 87.50%"]
    model = checks["model: success ratio predicted from the policy"]
    assert claim["method"] == "sprt"
    assert claim["outcome"] == "passed"
    assert claim["alpha"] <= 0.001
    assert model["method"] == "confidence sequence"
    # The fixed-sample plan for this scenario was 1,218 requests at alpha 0.001 (1,740 at the run's alpha); a
    # policy that holds is decided far sooner (Wald's mean under H0 is about 63 for this claim alone,
    # and batches are 200 requests).
    sent = sum(phase["requests"] for phase in record["load"])
    # The SPRT reads the batch in completion order and stops at its decision; the rest of the last
    # batch was sent but is not part of the claim's decision (the model check uses all of it).
    assert 0 < claim["n"] <= sent
    assert model["n"] == sent
    assert sent < 1218
