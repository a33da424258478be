"""Every counterexample the fidelity suite found is a regression case (``found/*.yaml``).

Each file holds the shrunk case, the checks that failed, and a judgement: ``model bug``, ``translation
bug``, ``envoy-istio fact``, or ``suite bug`` (this suite asked the model something it does not claim, or
ran an example outside its bounds). A case whose ``status`` is ``fixed`` must now pass every check. A case still
``open`` (its fix lies in code this suite does not own, or is not made yet) is a strict expected
failure, so the day it is fixed the test says so and the file must be updated. A case ``unjudged`` fails:
someone has to look at it.

The rate checks here use alpha = 0.001 (one case, not a family), with the nightly delta. A file may add a
``regression_case`` (with ``regression_note``): a stronger variant of the shrunk case for bugs the shrunk
case shows only now and then, so that a strict expected failure fails every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_meshcheck.error_budget import RUN_ALPHA
from tests.fidelity.cases import Case
from tests.fidelity.conftest import Meshes
from tests.fidelity.predict import RATE_CHECKS_PER_EXAMPLE
from tests.fidelity.profile import BETA, HERE
from tests.fidelity.run import OutOfBounds, run_example

FOUND = HERE / "found"
JUDGEMENTS = ("model bug", "translation bug", "envoy-istio fact", "suite bug")
DELTA = 0.1


def _files() -> list[Path]:
    return sorted(FOUND.glob("*.yaml"))


# A run's budget over every rate check the found cases make (Bonferroni), as for a scenario run: 0.001 per
# check gave them about 0.03 false failures per run, and one was seen (a 3.9-sigma success ratio, 192 of 604
# against 25 %, that passed alone).
ALPHA = RUN_ALPHA / (len(_files()) * RATE_CHECKS_PER_EXAMPLE)


def _param(path: Path) -> Any:
    doc = yaml.safe_load(path.read_text())
    marks = [pytest.mark.envoy]
    if doc.get("status") == "open":
        marks.append(
            pytest.mark.xfail(
                strict=True, raises=AssertionError, reason=f"{doc.get('judgement')}: {doc.get('root_cause')}"
            )
        )
    return pytest.param(path, doc, marks=marks, id=path.stem)


@pytest.mark.parametrize(("path", "doc"), [_param(p) for p in _files()])
def test_found_case(path: Path, doc: dict[str, Any], fidelity_meshes: Meshes) -> None:
    assert doc.get("judgement") in JUDGEMENTS, (
        f"{path}: judgement {doc.get('judgement')!r}; judge the case as one of {JUDGEMENTS} and write root_cause"
    )
    assert doc.get("status") in ("fixed", "open"), f"{path}: status must be 'fixed' or 'open'"
    # A judged case may name a stronger variant of itself (regression_note says why) when the shrunk case
    # shows the bug only now and then: a strict expected failure must fail every time.
    case = Case.from_data(doc.get("regression_case") or doc["case"])
    try:
        checks, _ = run_example(fidelity_meshes, case, alpha_check=ALPHA, beta=BETA, delta=DELTA, skip_known=False)
    except OutOfBounds:
        # The fix of a suite bug can be to keep such examples out: then the suite must reject this one.
        assert doc["judgement"] == "suite bug", f"{path}: the suite no longer runs this case"
        return
    failed = [str(c) for c in checks if not c.passed]
    assert not failed, "\n".join(str(c) for c in checks)


def test_found_files_are_complete() -> None:
    """Plumbing: every found file has the fields a reviewer needs (no mesh)."""
    for path in _files():
        doc = yaml.safe_load(path.read_text())
        missing = {"case", "policy_yaml", "failed_checks", "judgement", "status", "root_cause"} - set(doc)
        assert not missing, f"{path}: missing {sorted(missing)}"
        assert Case.from_data(doc["case"]).policy_yaml() == doc["policy_yaml"], f"{path}: policy_yaml is stale"
