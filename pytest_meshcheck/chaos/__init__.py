"""Chaos: faults at the destination workloads, in one package.

- :mod:`.kinds`: the fault kinds (:data:`~pytest_meshcheck.chaos.kinds.FaultKind`).
- :mod:`.destination`: the controller that applies and reverts faults through the workloads' admin API.
- :mod:`.echo_admin`: a typed client of one workload's admin API.
- :mod:`.platform_api`: the platform's chaos HTTP API that ``meshcheck up`` serves.
"""
