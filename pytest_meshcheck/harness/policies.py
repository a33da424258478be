"""The ``mesh_policies`` fixture: apply policies for one test, restore the mesh's policies afterwards."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_meshcheck.errors import MeshcheckWarning, PolicyError
from pytest_meshcheck.harness.timing import POLICY, POLICY_RESTORE, Timings
from pytest_meshcheck.policy import PolicySet, check_policies_fit, load_policies, load_policy_text
from pytest_meshcheck.policy.model import PolicyWarning
from pytest_meshcheck.policy.scale import scale_durations

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend


def as_policy_set(policies: PolicySet | str | Path, *, source: str = "<inline YAML>") -> PolicySet:
    """Accept a PolicySet, YAML text (named ``source`` in errors and reports), or a file/directory path."""
    if isinstance(policies, PolicySet):
        return policies
    if isinstance(policies, Path) or (
        "\n" not in policies and not policies.lstrip().startswith(("apiVersion", "kind"))
    ):
        return load_policies(policies)
    return _load_documents(policies, source)


_SEPARATOR = re.compile(r"(?m)^---[ \t]*$")


def _load_documents(text: str, source: str) -> PolicySet:
    """Load inline YAML document by document, so line numbers count from each document's start.

    Inline YAML is usually built in Python from one constant per object (``SUBSETS + "---" + CANARY``):
    a line number that runs on across the joined text points nowhere in the user's source, one counted
    within the document points at the constant's own line.
    """
    documents = [d for d in _SEPARATOR.split(text) if d.strip()]
    if len(documents) < 2:
        return load_policy_text(text, source=source)
    result, issues = PolicySet(), []
    for index, document in enumerate(documents, start=1):
        try:
            result = result.merged(load_policy_text(document, source=f"{source}, document {index}"))
        except PolicyError as exc:
            issues += exc.issues
    if issues:
        raise PolicyError(issues)
    return result


class MeshPolicies:
    """Applies policies for one test and restores the previous set at teardown.

    Args:
        mesh: The mesh backend.
        user_policies: The user's ``--mesh-policies`` set; when given, a scenario's built-in policies
            are replaced by it (``apply(..., builtin=True)``), so the same scenarios verify the user's YAML.
        source: Name given to inline YAML in errors and reports (the test's node id).
    """

    def __init__(
        self, mesh: MeshBackend, user_policies: PolicySet | None = None, *, source: str = "<inline YAML>"
    ) -> None:
        self._mesh = mesh
        self.source = source
        self._user = user_policies
        self._snapshot = mesh.policies
        self.applied: list[PolicySet] = []
        self.warnings: list[PolicyWarning] = []
        self.timings = Timings()

    def apply(
        self, policies: PolicySet | str | Path, *, builtin: bool = True, time_scale: float | None = None
    ) -> PolicySet:
        """Apply policies (added to or replacing same-named ones); return what was applied.

        Args:
            policies: A PolicySet, YAML text or a path.
            builtin: The scenario's own policies: replaced by ``--mesh-policies`` when the user gave it.
            time_scale: Multiply every duration by this factor (see :mod:`pytest_meshcheck.policy.scale`).
        """
        ps = self._user if builtin and self._user is not None else as_policy_set(policies, source=self.source)
        if time_scale is not None:
            ps = scale_durations(ps, time_scale)
        new = [*ps.warnings, *check_policies_fit(ps, self._mesh.topology)]
        self.warnings += new
        for w in new:
            warnings.warn(MeshcheckWarning(str(w)), stacklevel=2)
        with self.timings.measure(POLICY):
            self._mesh.apply(ps)
        self.applied.append(ps)
        return ps

    def remove(self, policies: PolicySet) -> None:
        """Remove policies before the test ends."""
        with self.timings.measure(POLICY):
            self._mesh.remove(policies)

    def clear(self) -> None:
        """Run with no policies at all (Istio's defaults only)."""
        with self.timings.measure(POLICY):
            self._mesh.replace_all(PolicySet())

    def restore(self) -> None:
        """Put back the policies that were in force before the test (teardown)."""
        with self.timings.measure(POLICY_RESTORE):
            self._mesh.replace_all(self._snapshot)

    @property
    def active(self) -> PolicySet:
        """The policies in force now."""
        return self._mesh.policies
