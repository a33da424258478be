"""The progress line never cuts into pytest's output: what a terminal shows, row by row.

The output is replayed on a small terminal model (the sink, not the code under test): it applies the
few control sequences a progress line and pytest use (carriage return, line feed, erase to end of row,
cursor up, cursor forward, colours) to a grid, so the tests read the rows a person would see. A line
feed starts a new row at column 0, as the terminal's line discipline delivers it (``onlcr``).
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _pytest._io import TerminalWriter

from pytest_meshcheck.report.progress import Progress, ProgressHooks


class Terminal:
    """Rows of characters after replaying ``text`` (autowrap at ``width``, rows grow as needed)."""

    def __init__(self, width: int = 80) -> None:
        self.width = width
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0

    def _put(self, ch: str) -> None:
        if self.col >= self.width:  # the previous character filled the row: wrap first
            self._down()
            self.col = 0
        line = self.rows[self.row]
        line.extend(" " * (self.col + 1 - len(line)))
        line[self.col] = ch
        self.col += 1

    def _down(self) -> None:
        self.row += 1
        if self.row == len(self.rows):
            self.rows.append([])

    def feed(self, text: str) -> Terminal:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = re.match(r"\x1b\[([0-9;?]*)([A-Za-z])", text[i:])
                assert m is not None, f"unknown escape {text[i : i + 8]!r}"
                arg, op = m.group(1), m.group(2)
                n = int(arg) if arg.isdigit() else 1
                if op == "K":
                    del self.rows[self.row][self.col :]
                elif op == "A":
                    self.row = max(0, self.row - n)
                elif op == "C":
                    self.col = min(self.width - 1, self.col + n)
                elif op != "m":
                    raise AssertionError(f"unexpected escape {m.group(0)!r}")
                i += len(m.group(0))
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":  # as a terminal's line discipline delivers it (onlcr): a new row, column 0
                self._down()
                self.col = 0
            else:
                self._put(ch)
            i += 1
        return self

    @property
    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.rows]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTty(io.StringIO):
    """What pytest's terminal writer writes to: a terminal that keeps everything it was sent."""

    def isatty(self) -> bool:
        return True


def _writer(width: int = 60) -> tuple[TerminalWriter, FakeTty]:
    stream = FakeTty()
    tw = TerminalWriter(stream)
    tw.fullwidth = width
    return tw, stream


def test_the_live_line_sits_below_pytests_row_and_leaves_it_intact() -> None:
    tw, stream = _writer()
    clock = Clock()
    tw.write("test_a.py ..")
    progress = Progress(tw, True, label="test_x", delay=1.0, interval=0.5, clock=clock)
    clock.now += 1.0
    progress.update("load", 200, 190)
    screen = Terminal(60).feed(stream.getvalue())
    assert screen.lines == ["test_a.py ..", "meshcheck: test_x load: 200 sent, 95.00% ok, 1 s"]
    # The cursor is back where pytest's next character belongs, and pytest's idea of its row is unchanged.
    assert (screen.row, screen.col) == (0, len("test_a.py .."))
    assert tw.width_of_current_line == len("test_a.py ..")
    clock.now += 0.5
    progress.update("load", 400, 380)
    tw.write(".")  # pytest's next dot, written while the line is shown
    clock.now += 0.5
    progress.update("load", 600, 570)  # redrawn below, not after the dot
    screen = Terminal(60).feed(stream.getvalue())
    assert screen.lines == ["test_a.py ...", "meshcheck: test_x load: 600 sent, 95.00% ok, 2 s"]
    progress.close()
    tw.write("F")
    screen = Terminal(60).feed(stream.getvalue())
    # Closed: the live row is cleared and the final line takes it, a whole line; pytest goes on below.
    assert screen.lines == ["test_a.py ...", "meshcheck: test_x done: load: 600 sent, 95.00% ok, 2 s", "F"]


def test_close_without_hooks_writes_the_final_line_on_a_row_of_its_own() -> None:
    tw, stream = _writer()
    clock = Clock()
    tw.write("test_a.py::test_x ")
    progress = Progress(tw, True, label="test_x", delay=0, interval=0, clock=clock)
    progress.update("load", 10, 10)
    clock.now += 3
    progress.close()
    tw.write("PASSED")
    screen = Terminal(60).feed(stream.getvalue())
    assert screen.lines == ["test_a.py::test_x", "meshcheck: test_x done: load: 10 sent, 100.00% ok, 3 s", "PASSED"]
    assert "\x1b[K" in stream.getvalue()  # the live row was cleared, not padded with spaces


def test_the_live_line_is_cut_to_one_row_and_the_final_line_is_not() -> None:
    tw, stream = _writer(width=40)
    clock = Clock()
    progress = Progress(tw, True, label="x" * 100, delay=0, interval=0, clock=clock)
    progress.update("load", 1, 1)
    screen = Terminal(40).feed(stream.getvalue())
    live = screen.lines[1]
    assert len(live) == 39
    assert live.endswith("...")
    progress.close()
    # The live row is cleared; the final line starts on pytest's (empty) row and wraps, nothing cut.
    final = Terminal(40).feed(stream.getvalue()).lines
    assert "".join(final).startswith("meshcheck: " + "x" * 100 + " done: load: 1 sent")
    assert len(final[0]) == 40


def test_nothing_is_drawn_when_pytests_column_is_unknown() -> None:
    tw, stream = _writer()
    clock = Clock()
    tw.write("a\tb")  # a control character: the column pytest's row ends at cannot be known
    progress = Progress(tw, True, label="t", delay=0, interval=0, clock=clock)
    progress.update("load", 1, 1)
    assert stream.getvalue() == "a\tb"


def test_hooks_erase_live_lines_before_a_report_and_write_final_lines_whole() -> None:
    tw, stream = _writer()
    clock = Clock()

    class Reporter:
        def write_line(self, line: str) -> None:
            if tw.width_of_current_line:
                tw.line()
            tw.line(line)

    hooks = ProgressHooks(Reporter())
    tw.write("test_a.py ")
    progress = Progress(
        tw, True, final_line=False, label="t", delay=0, interval=0, clock=clock, lines=hooks.queue, on_draw=hooks.track
    )
    progress.update("load", 5, 5)
    assert "meshcheck" in Terminal(60).feed(stream.getvalue()).lines[1]
    hooks.pytest_runtest_logreport(None)  # type: ignore[arg-type]
    tw.write(".")  # what the terminal reporter then writes
    assert Terminal(60).feed(stream.getvalue()).lines == ["test_a.py .", ""]
    progress.close()
    assert hooks.pending == []  # final_line=False: the live line was all (a terminal without -v)
    logged = Progress(tw, False, final_line=True, label="u", delay=0, clock=clock, lines=hooks.queue)
    logged.close()
    assert hooks.pending == ["meshcheck: u done: 0 sent, no responses yet, 0 s"]
    hooks.pytest_runtest_logfinish("n", ("f", None, "d"))
    assert Terminal(60).feed(stream.getvalue()).lines == [
        "test_a.py .",
        "meshcheck: u done: 0 sent, no responses yet, 0 s",
        "",
    ]
    assert hooks.pending == []


# --- real pytest sessions ---------------------------------------------------------------------------

# As the plugin uses it: the ``load`` fixture makes the progress and closes it at teardown, after
# pytest has written the test's result.
CONFTEST = """
import pytest
from pytest_meshcheck.report.progress import progress_for

@pytest.fixture
def progress(request):
    p = progress_for(request.config, request.node.name, delay=0.1, interval=0.03)
    yield p
    p.close()
"""

SESSION_TEST = """
import time
import pytest

@pytest.mark.parametrize("i", [0, 1, 2])
def test_long(progress, i):
    sent = 0
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        sent += 10
        progress.update("load", sent, sent - sent // 10)
        time.sleep(0.02)
    assert i != 1

def test_short():
    pass
"""

ENV = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("PYTEST_ADDOPTS", None)
COLUMNS = 100


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_long.py").write_text(textwrap.dedent(SESSION_TEST))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def _in_terminal(session_dir: Path, *args: str) -> str:
    """Everything pytest wrote to a pseudo-terminal ``COLUMNS`` wide (bounded in time)."""
    master, slave = pty.openpty()
    env = {**ENV, "COLUMNS": str(COLUMNS), "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(_cmd(*args), cwd=session_dir, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 1, b"".join(chunks).decode(errors="replace")  # test_long[1] fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def _results(lines: list[str]) -> list[str]:
    """The rows between the collection line and the first section rule."""
    start = next(i for i, line in enumerate(lines) if line.startswith("collected")) + 1
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("====="))
    return [line for line in lines[start:end] if line]


def test_terminal_dots_stay_on_one_row_with_no_progress_left_behind(session_dir: Path) -> None:
    raw = _in_terminal(session_dir)
    assert re.search(r"meshcheck: test_long\[0\] load: \d+ sent, 90\.00% ok", raw)  # it was shown live...
    rows = _results(Terminal(COLUMNS).feed(raw).lines)
    # ...and pytest's row reads exactly as it would without it.
    assert len(rows) == 1, rows
    assert re.fullmatch(r"test_long\.py \.F\.\. +\[100%\]", rows[0]), rows


def test_terminal_verbose_rows_are_whole_and_final_lines_follow_them(session_dir: Path) -> None:
    raw = _in_terminal(session_dir, "-v")
    rows = _results(Terminal(COLUMNS).feed(raw).lines)
    done = r"meshcheck: test_long\[{}\] done: load: \d+ sent, 90\.00% ok, \d+ s"
    patterns = [
        r"test_long\.py::test_long\[0\] PASSED +\[ 25%\]",
        done.format(0),
        r"test_long\.py::test_long\[1\] FAILED +\[ 50%\]",
        done.format(1),
        r"test_long\.py::test_long\[2\] PASSED +\[ 75%\]",
        done.format(2),
        r"test_long\.py::test_short PASSED +\[100%\]",
    ]
    assert len(rows) == len(patterns), rows
    for row, pattern in zip(rows, patterns, strict=True):
        assert re.fullmatch(pattern, row), (row, pattern)


def test_log_output_gets_whole_lines_that_never_share_a_row_with_results(session_dir: Path) -> None:
    proc = subprocess.run(_cmd(), cwd=session_dir, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "\r" not in proc.stdout
    assert "\x1b" not in proc.stdout
    rows = _results(proc.stdout.splitlines())
    done = [row for row in rows if "meshcheck" in row]
    assert len(done) == 3, rows
    for i, row in enumerate(done):
        assert re.fullmatch(rf"meshcheck: test_long\[{i}\] done: load: \d+ sent, 90\.00% ok, \d+ s", row), row
    results = [row for row in rows if "meshcheck" not in row]
    # Every result row starts with its file again after a summary line, and holds only results.
    assert all(re.fullmatch(r"test_long\.py [.F]+( +\[100%\])?", row) for row in results), results
    assert "".join(row.split()[1] for row in results) == ".F.."


def test_with_live_logging_the_line_is_not_drawn_in_place(session_dir: Path) -> None:
    # Log records reach the terminal between pytest's writes; a line redrawn in place would mix with them.
    raw = _in_terminal(session_dir, "-o", "log_cli=true")
    assert "\x1b[K" not in raw
    rows = Terminal(COLUMNS).feed(raw).lines
    done = [row for row in rows if row.startswith("meshcheck:")]
    assert len(done) == 3, rows
    assert all(re.fullmatch(r"meshcheck: test_long\[\d\] done: load: \d+ sent, 90\.00% ok, \d+ s", row) for row in done)
