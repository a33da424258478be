"""pytest-meshcheck: prove that service-mesh resilience policies hold under real faults and load.

The names a scenario needs, importable from the package itself::

    from pytest_meshcheck import ClosedLoop, Fault

    def test_two_retries_hide_most_503s(mesh_scenario):
        mesh_scenario.apply(RETRY_POLICY)
        mesh_scenario.inject("catalog-service", Fault.error(rate=0.5, status=503))
        mesh_scenario.drive("catalog-service", ClosedLoop(concurrency=4))
        mesh_scenario.expect_success_ratio(at_least=0.875, delta=0.125)
        mesh_scenario.expect_model_consistency()

Imports are lazy, so loading the plugin (``pytest --help``) does not import the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pytest_meshcheck.errors import MeshcheckError, MeshcheckWarning
    from pytest_meshcheck.harness.declare import ClosedLoop, Fault, OpenLoop
    from pytest_meshcheck.harness.scenario import Scenario, ScenarioFailed
    from pytest_meshcheck.policy import load_policies, load_policy_text
    from pytest_meshcheck.verdict.power import RateRule

_EXPORTS = {
    "ClosedLoop": "pytest_meshcheck.harness.declare",
    "Fault": "pytest_meshcheck.harness.declare",
    "OpenLoop": "pytest_meshcheck.harness.declare",
    "MeshcheckError": "pytest_meshcheck.errors",
    "MeshcheckWarning": "pytest_meshcheck.errors",
    "RateRule": "pytest_meshcheck.verdict.power",
    "Scenario": "pytest_meshcheck.harness.scenario",
    "ScenarioFailed": "pytest_meshcheck.harness.scenario",
    "load_policies": "pytest_meshcheck.policy",
    "load_policy_text": "pytest_meshcheck.policy",
}
__all__ = [
    "ClosedLoop",
    "Fault",
    "MeshcheckError",
    "MeshcheckWarning",
    "OpenLoop",
    "RateRule",
    "Scenario",
    "ScenarioFailed",
    "__version__",
    "load_policies",
    "load_policy_text",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pytest_meshcheck' has no attribute {name!r}")
