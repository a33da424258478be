"""``python -m pytest_meshcheck.lint FILES|DIRS``: the same as ``meshcheck lint``."""

from __future__ import annotations

import sys

from pytest_meshcheck.lint.cli import main

if __name__ == "__main__":
    sys.exit(main())
