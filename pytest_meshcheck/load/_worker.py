"""Child-process entry of the load engine: ``python -m pytest_meshcheck.load._worker``.

Reads one pickled job from stdin, runs it in its own event loop (uvloop when installed) and writes the
pickled records to stdout. Running apart keeps the engine off the caller's core and event loop.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from pytest_meshcheck.load.engine import run_in_loop

_T = TypeVar("_T")


def run_fast(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` in a new event loop, with uvloop when it is importable (it is faster, not required)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    """Run the job on stdin and write the result to stdout."""
    job = pickle.loads(sys.stdin.buffer.read())
    outcome = run_fast(run_in_loop(job["spec"], job["profile"], timeout=job["timeout"], grace=job["grace"]))
    payload = (outcome.records.to_state(), outcome.started_monotonic, outcome.started_wall, outcome.event_loop)
    sys.stdout.buffer.write(pickle.dumps(payload, protocol=5))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
