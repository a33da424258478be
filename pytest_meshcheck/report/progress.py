"""A live progress line for long scenarios: phase, requests sent, current success ratio.

Three behaviours, chosen by :func:`progress_for` from the session:

* **live** (a terminal, not ``-q``, not an xdist worker, no live logging, output captured): after
  ``delay`` seconds a line appears on the row *below* pytest's current row and is redrawn in place at
  most every ``interval`` seconds (a carriage return and an erase-line sequence clear the row; the text
  is cut to the terminal width, so it never wraps). The cursor goes back to the end of pytest's row after
  every draw, and the line is erased before pytest writes a test report, so pytest's dots and words land
  exactly where they would without it;
* **final line** (not a terminal, e.g. CI logs; and with ``-v`` also on a terminal): one summary line per
  scenario that outlasted ``delay``, written as a whole line once the test's reports are written (the
  terminal reporter's ``write_line``, which starts a fresh row and makes pytest repeat its file or test
  name before its next result);
* **off** (``-q``, xdist workers, no terminal reporter): nothing at all.

On a terminal without ``-v`` the live line is the only output: a summary line there would split pytest's
row of dots. With live logging (``log_cli``) or ``-s`` other output reaches the terminal between pytest's
own writes, so the line is not drawn live there; the final line still is.

``update`` is cheap when it does not draw, so the load loop may call it for every response. A
:class:`Progress` is used from one thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol

import pytest

# Erase from the cursor to the end of the row (ECMA-48 EL), move the cursor up one row (CUU).
CLEAR_TO_EOL = "\x1b[K"
CURSOR_UP = "\x1b[A"
HOOKS_NAME = "meshcheck-progress"


class ProgressWriter(Protocol):
    """The part of pytest's ``TerminalWriter`` a progress line needs.

    ``write_raw`` (write without updating the writer's idea of the current row) is used when the writer
    has it, so the live line never changes what pytest believes is on its row.
    """

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
        enabled: Draw the line live (terminals only).
        final_line: Write one summary line when the scenario is over, if it outlasted ``delay`` (or was
            drawn live). ``None``: only after a live line (the default of a live progress).
        label: What is running, shown first (the test name).
        delay: Seconds before anything is shown; shorter scenarios stay silent.
        interval: Minimum seconds between two redraws.
        suspend: Context manager factory that lifts pytest's output capturing while writing (the
            capture manager's ``global_and_fixture_disabled``); without it, text written during a test
            would land in the captured output.
        clock: Monotonic clock, replaceable in tests.
        lines: Takes the final summary line instead of writing it on :meth:`close`; the session's hooks
            (see :func:`progress_for`) write it as a whole line once the test's reports are written.
        on_draw: Called with this progress when its live line is first drawn (the session's hooks keep
            it, to erase it before pytest writes a report).

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
        final_line: bool | None = None,
        label: str = "",
        delay: float = 2.0,
        interval: float = 0.5,
        suspend: Callable[[], AbstractContextManager[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        lines: Callable[[str], None] | None = None,
        on_draw: Callable[[Progress], None] | None = None,
    ) -> None:
        self._writer = writer
        self.live = enabled and writer is not None
        wanted = self.live if final_line is None else final_line
        self.final_line = wanted and writer is not None
        self._label = label
        self._delay = delay
        self._interval = interval
        self._suspend = suspend or contextlib.nullcontext
        self._clock = clock
        self._lines = lines
        self._on_draw = on_draw
        self._started = clock()
        self._next_draw = self._started + delay
        self._drawn = False
        self._visible = False
        self._column = 0
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
        """``text`` cut to fit one row: a live line that wrapped could not be redrawn in place."""
        width = max(20, writer.fullwidth - 1)
        return text if len(text) <= width else text[: width - 3] + "..."

    def _raw(self, text: str) -> None:
        assert self._writer is not None
        write_raw = getattr(self._writer, "write_raw", None)
        if write_raw is not None:
            write_raw(text, flush=True)
        else:
            self._writer.write(text, flush=True)

    def _pytest_column(self) -> int | None:
        """The column where pytest's next character goes, or ``None`` when it cannot be known."""
        assert self._writer is not None
        width = int(getattr(self._writer, "width_of_current_line", 0))
        columns = max(1, self._writer.fullwidth)
        # -1: the row holds control characters; a multiple of the width: the cursor waits to wrap.
        if width < 0 or (width and width % columns == 0):
            return None
        return width % columns

    def _back(self) -> str:
        """Up to pytest's row, at the column where pytest continues."""
        return CURSOR_UP + "\r" + (f"\x1b[{self._column}C" if self._column else "")

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
        column = self._pytest_column()
        if column is None:
            return
        self._column = column
        # The row below pytest's: "\n" moves there (scrolling the first time, at the bottom of the
        # screen), "\r" + EL clears it, and the cursor goes back to where pytest's next write belongs.
        with self._suspend():
            self._raw("\n\r" + CLEAR_TO_EOL + self._fit(writer, self.text()) + self._back())
        self._visible = True
        if not self._drawn and self._on_draw is not None:
            self._on_draw(self)
        self._drawn = True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def hide(self) -> None:
        """Erase the live line (pytest is about to write); the next due :meth:`update` draws it again."""
        if not self._visible or self._writer is None:
            return
        self._visible = False
        with self._suspend():
            self._raw("\n\r" + CLEAR_TO_EOL + self._back())

    def close(self) -> None:
        """Finish: erase the live line, and hand over or write the final summary line (see the class doc)."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is None:
            return
        wanted = self.final_line and (self._drawn or self._clock() - self._started >= self._delay)
        if not wanted or self._lines is not None:
            self.hide()
            if wanted and self._lines is not None:
                self._lines(self.text(final=True))
            return
        with self._suspend():
            # A whole line of its own, never glued to what pytest has on its row: on pytest's row when that
            # is empty, else on the row below (the live line's, cleared first). One write: no half state.
            pytest_row = int(getattr(writer, "width_of_current_line", 0))
            start = "\n" if pytest_row else ""
            if self._visible:
                start = "\n\r" + CLEAR_TO_EOL + ("" if pytest_row else CURSOR_UP + "\r")
            self._visible = False
            writer.write(start + self.text(final=True) + "\n", flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ProgressHooks:
    """Session hooks that keep progress lines out of pytest's way (registered once by :func:`progress_for`).

    Before pytest writes a test report, every live line is erased; once a test's reports are written,
    the final lines of its scenarios are written through the terminal reporter as whole lines.
    """

    def __init__(self, reporter: Any, suspend: Callable[[], AbstractContextManager[None]] | None = None) -> None:
        self._reporter = reporter
        self._suspend = suspend or contextlib.nullcontext
        self._live: list[Progress] = []
        self.pending: list[str] = []

    def track(self, progress: Progress) -> None:
        """Keep a drawn live line, to erase it before pytest writes."""
        self._live.append(progress)

    def queue(self, line: str) -> None:
        """A final line, written at the end of the current test."""
        self.pending.append(line)

    def _hide_all(self) -> None:
        for progress in self._live:
            progress.hide()
        self._live = [p for p in self._live if not p.closed]

    def flush(self) -> None:
        """Write the queued final lines, each a whole line (``write_line`` starts a fresh row)."""
        lines, self.pending = self.pending, []
        if lines:
            with self._suspend():
                for line in lines:
                    self._reporter.write_line(line)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Erase live lines before the terminal reporter writes the result."""
        self._hide_all()

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        """After the reporter's own output for the test (its result, its progress percentage)."""
        self._hide_all()
        self.flush()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Lines of a progress closed outside any test."""
        self._hide_all()
        self.flush()


def _hooks(
    config: pytest.Config, reporter: Any, suspend: Callable[[], AbstractContextManager[None]] | None
) -> ProgressHooks:
    hooks = config.pluginmanager.get_plugin(HOOKS_NAME)
    if not isinstance(hooks, ProgressHooks):
        hooks = ProgressHooks(reporter, suspend)
        config.pluginmanager.register(hooks, HOOKS_NAME)
    return hooks


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
    # Live logging and -s put other text on the terminal between pytest's writes, where a line drawn
    # in place would be overwritten or leave remnants: there, only the final line.
    try:
        log_cli = bool(config.getini("log_cli"))
    except ValueError:  # the logging plugin is disabled (-p no:logging): no live logging either
        log_cli = False
    shared = log_cli or config.getoption("capture", None) == "no"
    live = tty and not shared
    hooks = _hooks(config, reporter, suspend)
    return Progress(
        config.get_terminal_writer(),
        live,
        final_line=not tty or shared or config.get_verbosity() >= 1,
        label=label,
        delay=delay,
        interval=interval,
        suspend=suspend,
        lines=hooks.queue,
        on_draw=hooks.track,
    )
