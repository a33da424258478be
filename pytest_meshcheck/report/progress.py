"""A live progress line for long scenarios: phase, requests sent, current success ratio.

Three behaviours, chosen by :func:`progress_for` from the session:

* **live** (a terminal, not ``-q``, not an xdist worker): after ``delay`` seconds the line appears on its
  own row and is redrawn in place at most every ``interval`` seconds; on close it is replaced by a final
  summary and the row ends, so pytest's own output continues below it (as with ``log_cli``);
* **final line** (not a terminal, e.g. CI logs): nothing while running, one summary line on close, only
  when the scenario outlasted ``delay``;
* **off** (``-q``, xdist workers, no terminal reporter): nothing at all.

``update`` is cheap when it does not draw, so the load loop may call it for every response. A
:class:`Progress` is used from one thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

import pytest


class ProgressWriter(Protocol):
    """The part of pytest's ``TerminalWriter`` a progress line needs."""

    def write(self, msg: str, *, flush: bool = False, **markup: bool) -> None:
        """Write text without a newline."""
        ...

    @property
    def fullwidth(self) -> int:
        """Terminal width in columns."""
        ...


class Progress:
    """A progress line for one scenario.

    Args:
        writer: Where to write (``config.get_terminal_writer()``); ``None`` disables output.
        enabled: Redraw the line live (terminals only).
        final_line: When not live, write one summary line on :meth:`close` (for logs).
        label: What is running, shown first (the test name).
        delay: Seconds before anything is shown; shorter scenarios stay silent.
        interval: Minimum seconds between two redraws.
        suspend: Context manager factory that lifts pytest's output capturing while writing (the
            capture manager's ``global_and_fixture_disabled``); without it, text written during a test
            would land in the captured output.
        clock: Monotonic clock, replaceable in tests.

    Example::

        with progress_for(request.config, request.node.name) as progress:
            for sent, ok in load_loop():
                progress.update("load", sent, ok)
    """

    def __init__(
        self,
        writer: ProgressWriter | None,
        enabled: bool,
        *,
        final_line: bool = False,
        label: str = "",
        delay: float = 2.0,
        interval: float = 0.5,
        suspend: Callable[[], AbstractContextManager[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self.live = enabled and writer is not None
        self.final_line = final_line and writer is not None and not self.live
        self._label = label
        self._delay = delay
        self._interval = interval
        self._suspend = suspend or contextlib.nullcontext
        self._clock = clock
        self._started = clock()
        self._next_draw = self._started + delay
        self._drawn = False
        self._closed = False
        self._state: tuple[str, int, int] = ("", 0, 0)

    def text(self, final: bool = False) -> str:
        """The line as it would be shown now."""
        phase, sent, ok = self._state
        ratio = f"{ok / sent:.2%} ok" if sent else "no responses yet"
        elapsed = self._clock() - self._started
        head = f"meshcheck: {self._label} " if self._label else "meshcheck: "
        body = f"{phase}: {sent} sent, {ratio}, {elapsed:.0f} s" if phase else f"{sent} sent, {ratio}, {elapsed:.0f} s"
        return head + ("done: " if final else "") + body

    @staticmethod
    def _fit(writer: ProgressWriter, text: str) -> str:
        width = max(20, writer.fullwidth - 1)
        return text[:width].ljust(width) if len(text) <= width else text[: width - 3] + "..."

    def update(self, phase: str, sent: int, ok: int) -> None:
        """Record the current phase, requests sent and successful responses; redraw when due."""
        self._state = (phase, sent, ok)
        writer = self._writer
        if not self.live or self._closed or writer is None:
            return
        now = self._clock()
        if now < self._next_draw:
            return
        self._next_draw = now + self._interval
        with self._suspend():
            if not self._drawn and int(getattr(writer, "width_of_current_line", 0)):
                # Start on a row of our own so the test's name stays readable above the progress line.
                writer.write("\n")
            writer.write("\r" + self._fit(writer, self.text()), flush=True)
        self._drawn = True

    def close(self) -> None:
        """Finish: end the live line with a summary, or write the one final line (see the class doc)."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is None:
            return
        if self.live and self._drawn:
            with self._suspend():
                writer.write("\r" + self._fit(writer, self.text(final=True)) + "\n", flush=True)
        elif self.final_line and self._clock() - self._started >= self._delay:
            with self._suspend():
                if int(getattr(writer, "width_of_current_line", 0)):
                    writer.write("\n")
                writer.write(self._fit(writer, self.text(final=True)).rstrip() + "\n", flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress_for(config: pytest.Config, label: str = "", *, delay: float = 2.0, interval: float = 0.5) -> Progress:
    """The right :class:`Progress` for this session (live, final line or off; see the module doc).

    Args:
        config: The pytest config.
        label: What is running (usually the test's name).
        delay: Seconds before anything is shown.
        interval: Minimum seconds between two redraws.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    worker = hasattr(config, "workerinput")  # xdist's documented marker of a worker process
    if reporter is None or worker or config.get_verbosity() < 0:
        return Progress(None, False, label=label, delay=delay, interval=interval)
    capman = config.pluginmanager.get_plugin("capturemanager")
    suspend = getattr(capman, "global_and_fixture_disabled", None)
    tty = bool(getattr(reporter, "isatty", False))
    return Progress(
        config.get_terminal_writer(),
        tty,
        final_line=not tty,
        label=label,
        delay=delay,
        interval=interval,
        suspend=suspend,
    )
