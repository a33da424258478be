"""Polling for a condition with a deadline: the only way cluster code waits (never a blind sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError

_T = TypeVar("_T")


def wait_until(
    check: Callable[[], tuple[bool, object]],
    *,
    timeout: float,
    description: str,
    interval: float = 0.5,
    fix: str = "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Call ``check`` until it reports done; return the seconds it took.

    Args:
        check: Returns ``(done, observed)``; ``observed`` is shown if the wait times out.
        timeout: Seconds allowed.
        description: What is awaited, for the error message.
        interval: Seconds between checks.
        fix: What the user can do about a timeout.
        clock: Monotonic clock (injectable for tests).
        sleep: Sleep function (injectable for tests).

    Raises:
        MeshTimeoutError: ``check`` never reported done within ``timeout``.
    """
    start = clock()
    while True:
        done, observed = check()
        elapsed = clock() - start
        if done:
            return elapsed
        if elapsed >= timeout:
            message = f"timed out after {timeout:g}s waiting for {description}; last observed: {observed}"
            raise MeshTimeoutError(message + (f". {fix}" if fix else ""))
        sleep(min(interval, max(0.0, timeout - elapsed)))


def wait_for_value(fetch: Callable[[], _T], timeout: float, what: str, *, interval: float = 2.0) -> _T:
    """Call ``fetch`` until it stops raising :class:`MeshSetupError` (say, after an install); return its value.

    Raises:
        MeshTimeoutError: It still raised after ``timeout``; the last error is in the message.
    """
    holder: list[_T] = []

    def check() -> tuple[bool, object]:
        try:
            holder.append(fetch())
        except MeshSetupError as exc:
            return False, str(exc)
        return True, ""

    wait_until(check, timeout=timeout, description=what, interval=interval)
    return holder[-1]
