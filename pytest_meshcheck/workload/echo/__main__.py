#!/usr/bin/env python3
"""Start one echo replica: ``python -m pytest_meshcheck.workload.echo --service S ...``, or this file by path.

In a pod and in the local mesh this file is ``echo.py`` at the root of the shipped tree
(:data:`pytest_meshcheck.workload.bundle.ECHO_FILES`), started as ``python3 -I -S echo.py``. Isolated mode
puts neither the script's directory nor site-packages on ``sys.path``, so the file adds its own directory,
where the shipped ``pytest_meshcheck`` tree of standard-library modules lies.
"""

from __future__ import annotations

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Imported only now: run by path, the shipped tree is importable once the line above has run.
from pytest_meshcheck.workload.echo.server import main

if __name__ == "__main__":
    sys.exit(main())
