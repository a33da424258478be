"""Reading a window of an append-only log from the marks earlier reads left (``metrics/log_offsets.py``).

The files here are written the way Envoy writes its logs: a line is appended after the request it records
started, so its start time is before the moment it is written.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pytest_meshcheck.metrics.log_offsets import open_log


def _append(path: Path, *starts: float) -> None:
    with path.open("a", encoding="utf-8") as f:
        for s in starts:
            f.write(json.dumps({"start": s, "pad": "x" * 40}) + "\n")


def _window(path: Path, start: float) -> list[float]:
    handle = open_log(path, start)
    assert handle is not None
    with handle:
        return [t for t in (json.loads(line)["start"] for line in handle) if t >= start]


def _every_start(path: Path) -> list[float]:
    return [json.loads(line)["start"] for line in path.read_text().splitlines()]


def test_a_missing_log_opens_as_none(tmp_path: Path) -> None:
    assert open_log(tmp_path / "absent.log", 0.0) is None


def test_a_window_after_an_earlier_read_skips_the_lines_written_before_it(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    before = time.time() - 1.0
    _append(log, before, before + 0.1)
    assert _window(log, 0.0) == [before, before + 0.1]  # the read leaves a mark at the current size
    window = time.time() + 0.001
    while time.time() <= window:
        time.sleep(0.001)
    _append(log, window, window + 0.2)
    handle = open_log(log, window)
    assert handle is not None
    with handle:
        lines = handle.read().splitlines()
    assert [json.loads(line)["start"] for line in lines] == [window, window + 0.2]  # seeked past the old lines


def test_a_window_that_starts_before_every_mark_reads_from_the_top(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    t0 = time.time() - 5.0
    _append(log, t0, t0 + 1)
    _window(log, t0)
    assert _window(log, t0 + 0.5) == [t0 + 1]
    assert _window(log, t0 - 1.0) == [t0, t0 + 1]


def test_a_mark_inside_a_line_being_written_skips_only_that_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    earlier = time.time() - 1.0
    half = json.dumps({"start": earlier, "pad": "y" * 40})
    with log.open("a", encoding="utf-8") as f:
        f.write(half[:20])  # a flush caught half way
    handle = open_log(log, 0.0)  # leaves a mark inside that line
    assert handle is not None
    handle.close()
    time.sleep(0.01)
    later = time.time()
    with log.open("a", encoding="utf-8") as f:
        f.write(half[20:] + "\n")
    _append(log, later)
    assert _window(log, later) == [later]


def test_a_log_rewritten_in_place_forgets_its_marks(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    now = time.time()
    _append(log, *(now - 3 + i / 100 for i in range(50)))
    _window(log, now)
    log.write_text("")  # same inode, shorter than the mark
    time.sleep(0.01)
    later = time.time()
    _append(log, later - 0.001, later)
    assert _window(log, later - 0.001) == [later - 0.001, later]


def test_windows_read_from_marks_equal_a_full_scan(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    rng = random.Random(7)
    for _ in range(60):
        now = time.time()
        # lines record requests that started up to 50 ms before they are written, in completion order
        _append(log, *sorted(now - rng.random() * 0.05 for _ in range(rng.randint(0, 5))))
        start = now - rng.random() * 0.2
        expected = [t for t in _every_start(log) if t >= start]
        assert sorted(_window(log, start)) == sorted(expected)
        time.sleep(0.002)
