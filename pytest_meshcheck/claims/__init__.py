"""Claims files: resilience claims written as YAML (``*.meshcheck.yaml``), collected and run by pytest.

A claims file states, per claim, the policies, the service the load calls, the fault, the load and what
is expected. Each claim becomes one pytest item (its node id is ``<file>::<name>``), so ``-k``, xdist,
JUnit and the scenario reports work as for a Python scenario. A claim is compiled to the calls a Python
scenario makes on the ``mesh_scenario`` fixture (``apply``, ``inject``, ``drive``, ``expect_*``, ``verify``):
there is no second engine.

Modules:

- :mod:`~pytest_meshcheck.claims.schema`: read and validate a claims file; every problem names the file,
  line, key path and a fix.
- :mod:`~pytest_meshcheck.claims.compile`: resolve the policies and compile each claim to scenario calls.
- :mod:`~pytest_meshcheck.claims.collect`: the pytest collector and items.

The reference is ``docs/reference/claims.md``.
"""

from __future__ import annotations

CLAIMS_SUFFIXES = (".meshcheck.yaml", ".meshcheck.yml")
"""File names that pytest collects as claims files."""

__all__ = ["CLAIMS_SUFFIXES"]
