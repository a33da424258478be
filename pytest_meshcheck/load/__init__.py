"""Load engine: open- and closed-loop HTTP/1.1 traffic through an Envoy listener, one record per request.

Usage::

    from pytest_meshcheck.load import OpenLoop, run_load

    result = run_load("http://127.0.0.1:15001/", OpenLoop(rate=500, duration="2s", max_requests=1000),
                      host="order-service")
    result.status_histogram(), result.latency_percentiles([50, 99]), result.instance_counts()
"""

from __future__ import annotations

from pytest_meshcheck.load.profile import ClosedLoop, LoadError, LoadProfile, OpenLoop, parse_duration
from pytest_meshcheck.load.records import ERROR_KINDS, LoadRecord, LoadRecords
from pytest_meshcheck.load.result import LoadResult
from pytest_meshcheck.load.run import run_load, run_load_async

__all__ = [
    "ERROR_KINDS",
    "ClosedLoop",
    "LoadError",
    "LoadProfile",
    "LoadRecord",
    "LoadRecords",
    "LoadResult",
    "OpenLoop",
    "parse_duration",
    "run_load",
    "run_load_async",
]
