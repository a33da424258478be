"""The files each out-of-process program runs, and how they are laid out wherever it runs.

This module runs in the test process (it reads the package's own files); the programs it lists do not.

A bundle is a tuple of :class:`ShippedFile`: a program's entry file at the root, plus the
``pytest_meshcheck`` modules it imports, as a package tree. The package's own ``__init__.py`` is
replaced by a generated one, because the real one may import more than the bundle holds. The kube
context ships a bundle as a ConfigMap mounted at ``/opt/meshcheck``; the local mesh and the tests write
it to a directory with :func:`write_bundle`. Either way it starts as ``python3 -I -S <root>/<entry>.py``,
so it never sees site-packages, and what runs locally is byte for byte what runs in a pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_PKG = "pytest_meshcheck"
_PACKAGE_INIT = '"""The pytest-meshcheck modules this program needs, shipped without the rest of the package."""\n'
_LOAD_INIT = '"""Load engine modules; the agent imports them directly."""\n'


@dataclass(frozen=True)
class ShippedFile:
    """One file of a bundle: its key (the ConfigMap key), where it is mounted, and where its text comes from.

    Attributes:
        key: ConfigMap key; unique within the bundle.
        path: Path below the bundle root, such as ``pytest_meshcheck/errors.py``.
        source: Package-relative path of the file to ship, or ``""`` for ``text``.
        text: The generated text, when ``source`` is empty.
    """

    key: str
    path: str
    source: str
    text: str = ""

    def content(self) -> str:
        """The file's text (read from the installed package)."""
        if not self.source:
            return self.text
        return resources.files(_PKG).joinpath(self.source).read_text(encoding="utf-8")


def _module(key: str, source: str) -> ShippedFile:
    """A package module, mounted at its own package path."""
    return ShippedFile(key, f"{_PKG}/{source}", source)


def _package(directory: str, key_prefix: str) -> tuple[ShippedFile, ...]:
    """Every module of one package directory except ``__main__`` (the bundle's entry file is that)."""
    names = sorted(
        entry.name
        for entry in resources.files(_PKG).joinpath(directory).iterdir()
        if entry.name.endswith(".py") and entry.name != "__main__.py"
    )
    return tuple(_module(f"{key_prefix}.{name}", f"{directory}/{name}") for name in names)


_PACKAGE = ShippedFile("pkg.init.py", f"{_PKG}/__init__.py", "", _PACKAGE_INIT)
_ERRORS = _module("pkg.errors.py", "errors.py")
_DURATIONS = _module("pkg.durations.py", "durations.py")

#: The echo workload (:mod:`pytest_meshcheck.workload.echo`), started as ``echo.py``.
ECHO_FILES: tuple[ShippedFile, ...] = (
    ShippedFile("echo.py", "echo.py", "workload/echo/__main__.py"),
    _PACKAGE,
    _ERRORS,
    _DURATIONS,
    _module("pkg.procfs.py", "procfs.py"),
    _module("workload.init.py", "workload/__init__.py"),
    *_package("workload/echo", "echo"),
)

#: The in-mesh agent (:mod:`pytest_meshcheck.workload.agent`), started as ``agent.py``, and the load engine
#: it runs. ``records.py`` is the standard-library stand-in for the numpy record store (the image has no
#: numpy); everything else is the engine the local context runs, byte for byte.
AGENT_FILES: tuple[ShippedFile, ...] = (
    ShippedFile("agent.py", "agent.py", "workload/agent.py"),
    _PACKAGE,
    _ERRORS,
    _DURATIONS,
    ShippedFile("load.init.py", f"{_PKG}/load/__init__.py", "", _LOAD_INIT),
    _module("load.engine.py", "load/engine.py"),
    _module("load.http1.py", "load/http1.py"),
    _module("load.profile.py", "load/profile.py"),
    _module("load.request.py", "load/request.py"),
    ShippedFile("load.records.py", f"{_PKG}/load/records.py", "workload/agent_records.py"),
)


def write_bundle(files: tuple[ShippedFile, ...], directory: Path) -> Path:
    """Lay ``files`` out under ``directory`` exactly as the pod's ConfigMap volume mounts them.

    Returns:
        ``directory``, which then holds e.g. ``echo.py`` and ``pytest_meshcheck/workload/echo/app.py``.
    """
    for f in files:
        target = directory / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content(), encoding="utf-8")
    return directory
