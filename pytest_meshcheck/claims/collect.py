"""pytest collection of claims files: one :class:`ClaimsFile` per ``*.meshcheck.yaml``, one item per claim.

Each claim becomes a :class:`ClaimItem`, a :class:`pytest.Function` bound to a generated function that
takes the ``mesh_scenario`` fixture and whose docstring is the claim's title. Being an ordinary function
item, a claim gets fixtures, ``-k``/``-m`` selection, xdist distribution, JUnit properties, the
``meshcheck`` marker and the scenario record and report exactly as a Python scenario does.

A claims file with any problem is a collection error that lists every problem (file, line, key, fix);
nothing of a half-valid file runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_meshcheck.claims import CLAIMS_SUFFIXES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from _pytest._code.code import TerminalRepr, TracebackStyle

    from pytest_meshcheck.claims.compile import CompiledClaim
    from pytest_meshcheck.harness.scenario import Scenario

_SERVICES_KEY = pytest.StashKey["frozenset[str] | None"]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ClaimsFile | None:
    """Collect ``*.meshcheck.yaml`` (and ``.meshcheck.yml``) files as claims files."""
    if file_path.name.endswith(CLAIMS_SUFFIXES):
        return ClaimsFile.from_parent(parent, path=file_path)
    return None


def _topology_services(config: pytest.Config) -> frozenset[str] | None:
    """Service names (short and FQDN) of the topology the run's mesh will use, or ``None`` if unknown."""
    if _SERVICES_KEY in config.stash:
        return config.stash[_SERVICES_KEY]
    from pytest_meshcheck.errors import MeshcheckError
    from pytest_meshcheck.plugin import SETTINGS_KEY
    from pytest_meshcheck.topology import load_topology

    # Absent when the claims hook is loaded without the plugin's configure step (the default topology then).
    settings = config.stash.get(SETTINGS_KEY, None)
    services: frozenset[str] | None
    try:
        topology = load_topology(settings.topology if settings is not None else None)
        services = frozenset({s.name for s in topology.services} | {s.fqdn for s in topology.services})
    except MeshcheckError:
        # A broken topology is the mesh fixture's error to report; the claims are not checked against it.
        services = None
    config.stash[_SERVICES_KEY] = services
    return services


def _display(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


def _test_function(claim: CompiledClaim) -> Callable[[Scenario], None]:
    """A test function taking ``mesh_scenario`` whose docstring is the claim (the fixture reads its title)."""

    def claim_test(mesh_scenario: Scenario) -> None:
        __tracebackhide__ = True
        claim.run(mesh_scenario)

    claim_test.__doc__ = claim.doc
    claim_test.__name__ = claim_test.__qualname__ = claim.name
    return claim_test


class ClaimsFile(pytest.File):
    """A ``*.meshcheck.yaml`` file: validated and compiled whole, then one :class:`ClaimItem` per claim."""

    def collect(self) -> Iterator[ClaimItem]:
        """Compile the file; raise a collection error listing every problem when it has any."""
        from pytest_meshcheck.claims.compile import compile_file
        from pytest_meshcheck.claims.schema import ClaimsError
        from pytest_meshcheck.harness.scenario import ScenarioFailed

        try:
            claims = compile_file(
                self.path, display=_display(self.path, self.config), services=_topology_services(self.config)
            )
        except ClaimsError as exc:
            # CollectError shows its message alone: the problems, without a traceback of the collector.
            raise self.CollectError(str(exc)) from None
        for claim in claims:
            item = ClaimItem.from_parent(self, name=claim.name, callobj=_test_function(claim), claim=claim)
            if claim.xfail is not None:
                # raises=ScenarioFailed: only the claim failing counts; a broken run stays an error.
                item.add_marker(
                    pytest.mark.xfail(strict=claim.xfail.strict, raises=ScenarioFailed, reason=claim.xfail.reason)
                )
            yield item


class ClaimItem(pytest.Function):
    """One claim: a function item bound to a generated ``mesh_scenario`` test, located at the claim's line.

    Attributes:
        claim: The compiled claim.
    """

    def __init__(self, *, claim: CompiledClaim, **kwargs: Any) -> None:
        self.claim = claim
        super().__init__(**kwargs)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """The claim's file and line (0-based), for JUnit, ``--collect-only`` and failure headers."""
        line = self.claim.spec.where.line
        return self.path, (line - 1 if line else None), f"claim {self.name}"

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        """A claim's failure without the collector's frames: the message says what failed and where."""
        from pytest_meshcheck.errors import MeshcheckError
        from pytest_meshcheck.harness.scenario import ScenarioFailed

        if isinstance(excinfo.value, ScenarioFailed | MeshcheckError) and not self.config.getoption("fulltrace"):
            where = self.claim.spec.where
            return f"{where} ({self.name}): {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)
