"""Inert when unused: an installed plugin costs unrelated runs no heavy import, no process and no file.

Each case runs pytest in a fresh interpreter (``python -c``) so ``sys.modules`` starts empty, and watches
the whole run through audit hooks: every process started (``subprocess.Popen``, ``os.posix_spawn``,
``os.exec``, ``os.fork``) and every file opened under pytest-meshcheck's state directory is recorded,
so even a process that was started and stopped again, or a state file created and removed, is seen.
"""

from __future__ import annotations

import json
import sys

import pytest

HEAVY = ("kubernetes", "jinja2", "aiohttp", "scipy", "numpy", "pygal", "prometheus_api_client", "httpx")
# The only modules of ours an unrelated run may load: the entry point and the option table it reads.
# hooks: the hookspecs other plugins implement must be registered at start-up (it imports only pytest);
# lint.options: the --mesh-lint options (likewise).
GLUE = {
    "pytest_meshcheck",
    "pytest_meshcheck.hooks",
    "pytest_meshcheck.lint",
    "pytest_meshcheck.lint.options",
    "pytest_meshcheck.plugin",
    "pytest_meshcheck.settings",
}

WATCH = r"""
import json, os, sys, tempfile
state_root = os.path.join(tempfile.gettempdir(), f"pytest-meshcheck-{os.getuid()}")
before = set(os.listdir(state_root)) if os.path.isdir(state_root) else set()
events = []

def audit(event, args):
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork", "os.spawn"):
        events.append([event, repr(args)[:300]])
    elif event == "open" and isinstance(args[0], str) and args[0].startswith(state_root):
        events.append([event, args[0]])

sys.addaudithook(audit)
import pytest
ret = pytest.main(sys.argv[1:])
after = set(os.listdir(state_root)) if os.path.isdir(state_root) else set()
mine = sorted(n for n in after - before if n.startswith(f"{os.getpid()}-"))
with open("inert.json", "w") as f:
    json.dump({"ret": int(ret), "modules": sorted(sys.modules), "events": events, "state_files": mine}, f)
"""


@pytest.mark.parametrize(
    ("args", "old_reports"),
    [
        pytest.param([], False, id="unrelated-run"),
        pytest.param(["--help"], False, id="help"),
        pytest.param(["--fixtures"], False, id="fixtures"),
        pytest.param(["--mesh-profile=smoke", "--mesh-keep"], False, id="unrelated-run-with-options"),
        # A directory that holds an earlier run's reports: an unrelated run must neither read nor rewrite them.
        pytest.param([], True, id="unrelated-run-next-to-old-reports"),
    ],
)
def test_plugin_is_inert_when_unused(pytester: pytest.Pytester, args: list[str], old_reports: bool) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    if old_reports:
        old = pytester.mkdir("reports") / "test_x.py__test_y.json"
        old.write_text(json.dumps({"nodeid": "test_x.py::test_y", "schema": 1, "outcome": "passed"}))

    result = pytester.run(sys.executable, "-c", WATCH, "-p", "no:cacheprovider", *args, timeout=120)

    assert result.ret == 0, result.stderr.str()
    seen = json.loads((pytester.path / "inert.json").read_text())
    assert seen["ret"] == 0
    loaded = set(seen["modules"])
    assert "pytest_meshcheck.plugin" in loaded, "the plugin must be loaded, or this test proves nothing"
    assert sorted(m for m in HEAVY if m in loaded) == []
    assert sorted(m for m in loaded if m.startswith("pytest_meshcheck")) == sorted(GLUE)
    assert seen["events"] == []
    assert seen["state_files"] == []
    if old_reports:
        assert sorted(p.name for p in (pytester.path / "reports").iterdir()) == ["test_x.py__test_y.json"]
