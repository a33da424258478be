"""Child-process entry of the load engine: ``python -m pytest_meshcheck.load._worker``.

Reads one pickled job from stdin, runs it in its own event loop (uvloop when installed) and writes the
pickled records to stdout. Running apart keeps the engine off the caller's core and event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import pickle
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from pytest_meshcheck.load.engine import run_in_loop

_T = TypeVar("_T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop measured 2.3x asyncio's loop in closed-loop throughput here (bench/bench_load.py); use it when
    # installed, and fall back to asyncio, which is correct but slower.
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], module.new_event_loop)


def run_fast(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` in a new event loop: uvloop's when it is importable, else asyncio's."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)


def main() -> None:
    """Run the job on stdin and write the result to stdout."""
    data = sys.stdin.buffer.read()
    if not data:
        return  # a warm spare whose parent exited before giving it a job (load/run.py)
    job = pickle.loads(data)
    outcome = run_fast(run_in_loop(job["spec"], job["profile"], timeout=job["timeout"], grace=job["grace"]))
    payload = (outcome.records.to_state(), outcome.started_monotonic, outcome.started_wall, outcome.event_loop)
    sys.stdout.buffer.write(pickle.dumps(payload, protocol=5))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
