"""A Ctrl-C that ``meshcheck up`` handled must end in exit status 130, not in death by SIGINT.

CPython marks a KeyboardInterrupt that leaves ``exec`` of a string as unhandled even when it is caught further
up, and under ``python -m`` kills itself with SIGINT at exit. The start-up's lazy imports run such ``exec`` calls
(``dataclasses``), so a Ctrl-C can land in one (`tests/integration/test_meshcheck_up.py` saw status -2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
import os, signal, sys
from pytest_meshcheck.cli import _forget_unhandled_keyboard_interrupt

try:
    exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nx = [0 for _ in range(100_000)]")
except KeyboardInterrupt:
    print("handled", flush=True)
if sys.argv[1] == "forget":
    _forget_unhandled_keyboard_interrupt()
sys.exit(130)
"""


@pytest.mark.parametrize(("mode", "status"), [("forget", 130), ("keep", -2)])
def test_a_handled_ctrl_c_inside_exec_exits_130(tmp_path: Path, mode: str, status: int) -> None:
    (tmp_path / "ctrl_c_in_exec.py").write_text(PROGRAM)
    run = subprocess.run(
        [sys.executable, "-m", "ctrl_c_in_exec", mode], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.stdout == "handled\n"
    # "keep" shows the interpreter's behaviour the helper exists for; if a CPython release drops it, this
    # case fails and the helper can go.
    assert run.returncode == status, run.stderr
