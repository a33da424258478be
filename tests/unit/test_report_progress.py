"""The live progress line: its rules with a fake clock, then real pytest runs (log, -q, -n 2, a terminal)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_meshcheck.report.progress import Progress


class Screen:
    """A terminal writer that keeps what was written (the sink, not the thing under test)."""

    fullwidth = 60

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.current = ""

    def write(self, msg: str, *, flush: bool = False, **markup: bool) -> None:
        self.chunks.append(msg)
        self.current = msg.rsplit("\n", 1)[-1] if "\n" in msg else self.current + msg

    @property
    def width_of_current_line(self) -> int:
        return len(self.current)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_line_waits_redraws_in_place_and_ends_with_a_summary() -> None:
    screen, clock = Screen(), Clock()
    screen.write("scenarios/test_a.py::test_x ")  # pytest's own text on the current row
    progress = Progress(screen, True, label="test_x", delay=2.0, interval=0.5, clock=clock)
    progress.update("load", 10, 10)
    clock.now += 1.9
    progress.update("load", 190, 188)
    assert screen.chunks == ["scenarios/test_a.py::test_x "]  # quiet for the first two seconds
    clock.now += 0.2
    progress.update("load", 210, 200)
    # On the row below, cleared first, so the test name above stays intact; then back to pytest's row.
    assert screen.chunks[1].startswith("\n\r\x1b[Kmeshcheck: test_x load: 210 sent, 95.24% ok, 2 s")
    assert screen.chunks[1].endswith("\x1b[A\r\x1b[28C")
    clock.now += 0.3
    progress.update("load", 240, 230)  # within the redraw interval: nothing written
    assert len(screen.chunks) == 2
    clock.now += 0.3
    progress.update("drain", 260, 250)
    assert screen.chunks[2].startswith("\n\r\x1b[Kmeshcheck: test_x drain: 260 sent")
    progress.close()
    assert screen.chunks[3].startswith("\n\r\x1b[Kmeshcheck: test_x done: drain: 260 sent, 96.15% ok, 3 s")
    assert screen.chunks[3].endswith("\n")
    assert screen.current == ""
    progress.close()
    progress.update("load", 1, 1)
    assert len(screen.chunks) == 4  # closed: nothing more


def test_live_line_is_cut_to_the_terminal_width() -> None:
    screen, clock = Screen(), Clock()
    progress = Progress(screen, True, label="x" * 200, delay=0, clock=clock)
    progress.update("load", 1, 1)
    line = screen.chunks[0].split("\x1b[K")[1].split("\x1b[A")[0]  # the text drawn on its row
    assert len(line) == screen.fullwidth - 1
    assert line.endswith("...")


def test_short_scenarios_print_nothing() -> None:
    for enabled, final in ((True, False), (False, True)):
        screen, clock = Screen(), Clock()
        with Progress(screen, enabled, final_line=final, delay=2.0, clock=clock) as progress:
            progress.update("load", 5, 5)
            clock.now += 1.0
            progress.update("load", 9, 9)
        assert screen.chunks == []


def test_log_mode_writes_exactly_one_final_line() -> None:
    screen, clock = Screen(), Clock()
    with Progress(screen, False, final_line=True, label="t", delay=2.0, interval=0.1, clock=clock) as progress:
        for i in range(1, 50):
            clock.now += 0.1
            progress.update("load", i * 10, i * 10)
    assert screen.text == "meshcheck: t done: load: 490 sent, 100.00% ok, 5 s\n"


def test_off_mode_and_no_writer_print_nothing() -> None:
    screen, clock = Screen(), Clock()
    for progress in (
        Progress(screen, False, clock=clock, delay=0),
        Progress(None, True, final_line=True, delay=0),
    ):
        progress.update("load", 1, 0)
        progress.close()
    assert screen.chunks == []


def test_writes_lift_output_capturing() -> None:
    screen, clock = Screen(), Clock()
    state = {"inside": 0, "entered": 0}

    @contextmanager
    def suspend() -> Iterator[None]:
        state["inside"] += 1
        state["entered"] += 1
        try:
            yield
        finally:
            state["inside"] -= 1

    class Checked(Screen):
        def write(self, msg: str, *, flush: bool = False, **markup: bool) -> None:
            assert state["inside"] == 1, "written while capture was active"
            super().write(msg, flush=flush, **markup)

    checked = Checked()
    progress = Progress(checked, True, delay=0, interval=0, suspend=suspend, clock=clock)
    progress.update("load", 1, 1)
    progress.close()
    assert state["entered"] == 2
    assert len(checked.chunks) == 2
    assert screen.chunks == []


# --- real pytest sessions ---------------------------------------------------------------------------

SESSION_TEST = """
import time
import pytest
from pytest_meshcheck.report.progress import progress_for

DELAY, INTERVAL = 0.1, 0.03

@pytest.mark.parametrize("i", [0, 1])
def test_long(request, i):
    with progress_for(request.config, request.node.name, delay=DELAY, interval=INTERVAL) as progress:
        # Paced by sleeps, not by a deadline: time.sleep waits at least as long as asked, so however
        # loaded the machine, every update after the first sleep is due to draw (4 redraws at least).
        sent = 10
        progress.update("load", sent, sent - sent // 10)
        time.sleep(DELAY + 0.01)
        for _ in range(4):
            sent += 10
            progress.update("load", sent, sent - sent // 10)
            time.sleep(INTERVAL + 0.01)
        if hasattr(request.config, "workerinput"):  # an xdist worker never draws
            assert not (progress.live or progress.final_line)
    print("captured-by-pytest")
"""


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    (tmp_path / "test_long.py").write_text(textwrap.dedent(SESSION_TEST))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


# Only the plugins a session needs (xdist when asked for): faster, and independent of what else is installed.
ENV = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
ENV.pop("PYTEST_ADDOPTS", None)


def _pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def _run(session_dir: Path, *args: str) -> str:
    proc = subprocess.run(_pytest_cmd(*args), cwd=session_dir, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_log_output_gets_one_line_per_long_scenario(session_dir: Path) -> None:
    out = _run(session_dir)
    done = [line for line in out.splitlines() if line.startswith("meshcheck:")]
    assert len(done) == 2, out
    assert re.fullmatch(r"meshcheck: test_long\[0\] done: load: \d+ sent, 90\.00% ok, \d+ s", done[0])
    assert "\r" not in out
    assert "captured-by-pytest" not in out  # the test's own output is still captured
    assert "2 passed" in out


def test_quiet_and_xdist_runs_print_no_progress(session_dir: Path) -> None:
    for args in (("-q",), ("-p", "xdist", "-n", "2")):
        out = _run(session_dir, *args)
        assert "meshcheck:" not in out, (args, out)
        assert "2 passed" in out


def _run_in_terminal(session_dir: Path, *args: str) -> str:
    """Run pytest with its stdout on a pseudo-terminal; return everything it wrote (bounded in time)."""
    master, slave = pty.openpty()
    env = {**ENV, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        _pytest_cmd(*args), cwd=session_dir, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
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
        assert proc.wait(timeout=10) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode(errors="replace"))


def test_terminal_gets_a_live_line(session_dir: Path) -> None:
    out = _run_in_terminal(session_dir, "-v")
    redraws = re.findall(r"\r\x1b\[Kmeshcheck: test_long\[0\] load: \d+ sent, 90\.00% ok", out)
    assert len(redraws) >= 4, out  # drawn in place at every update after the delay
    finals = re.findall(r"\nmeshcheck: test_long\[\d\] done: load: \d+ sent, 90\.00% ok, \d+ s *\r?\n", out)
    assert len(finals) == 2, out
    assert "test_long.py::test_long[0] " in out
    assert "PASSED" in out
    assert "2 passed" in out
