"""Where to start reading a sidecar's append-only log for a window, so a read does not rescan the whole run.

Every check that reads a sidecar log (response flags, Envoy's durations, per-attempt records, outlier events)
wants the lines of one scenario, but the files hold the whole session: 26,000 requests in a serial run of the
scenario suite, each line parsed again at every read. The reads themselves leave the marks that skip this:
before a read, the file's size is taken and then the clock (``T``). Every line inside that size had been
written by ``T``, and Envoy logs a request after it started, so each of those lines started before ``T``. A
later read of a window that starts at or after ``T`` can therefore begin at that size. The previous scenario's
reads leave such marks before the next scenario's window opens.

Why by hand: no library indexes an append-only log by write time; this is a few lines over ``os.stat``.
"""

from __future__ import annotations

import io
import os
import threading
import time
from bisect import bisect_right
from pathlib import Path
from typing import TextIO

# (device, inode) -> marks (time, size), in the order taken. A file replaced by a new one (a new mesh reusing a
# directory) has a new inode, so its old marks are never used for it.
_marks: dict[tuple[int, int], list[tuple[float, int]]] = {}
_lock = threading.Lock()


def open_log(path: Path, start: float) -> TextIO | None:
    """Open ``path`` for reading the lines of a window that starts at unix time ``start``.

    The handle is positioned at the latest mark taken before ``start`` (at the start of the file when there is
    none), on a line boundary. Lines before that position all started before ``start``; lines after it may
    still include some that did, so callers keep their own time filter.

    Returns:
        A text handle (UTF-8, bad bytes replaced), or ``None`` when the file does not exist (yet).
    """
    try:
        raw = path.open("rb")
    except OSError:
        return None
    stat = os.fstat(raw.fileno())
    key = (stat.st_dev, stat.st_ino)
    taken = time.time()  # after the size: every line inside ``stat.st_size`` was written before this
    with _lock:
        marks = _marks.setdefault(key, [])
        if marks and stat.st_size < marks[-1][1]:
            marks.clear()  # rewritten in place: no mark holds any more
        index = bisect_right(marks, (start, float("inf")))
        offset = marks[index - 1][1] if index else 0
        if not marks or marks[-1][0] < taken:
            marks.append((taken, stat.st_size))
    if offset > 0:
        # A mark taken while Envoy was writing a flush can fall inside a line; that line started before the
        # mark, so the rest of it is skipped.
        raw.seek(offset - 1)
        if raw.read(1) != b"\n":
            raw.readline()
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
