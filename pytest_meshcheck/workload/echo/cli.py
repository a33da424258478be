"""The echo command line: ``echo.py --service S --version V --instance I --namespace N [options]``.

Bad input exits with status 2 and a message naming the option, as argparse does.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pytest_meshcheck.workload.echo.replica import Identity


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    identity: Identity
    host: str
    port: int
    admin_host: str
    admin_port: int
    parent_pid: int | None
    seed: int | None


def _name(text: str) -> str:
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be non-empty printable text, got {text!r}")
    return text


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535 (0 = any free port), got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535 (0 = any free port), got {text!r}")
    return value


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive process id, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive process id, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exit status 2 and a message naming the option on bad input)."""
    parser = argparse.ArgumentParser(prog="echo.py", description="meshcheck echo workload (one replica).")
    parser.add_argument("--service", required=True, type=_name, help="service name, such as reviews")
    parser.add_argument("--version", required=True, type=_name, help="version label, such as v1")
    parser.add_argument("--instance", required=True, type=_name, help="replica id, such as reviews-v1-0")
    parser.add_argument("--namespace", required=True, type=_name, help="namespace, such as default")
    parser.add_argument("--host", default="127.0.0.1", help="serving address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="serving port (default 0 = any free port)")
    parser.add_argument("--admin-host", default="127.0.0.1", help="admin address (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=_port, default=0, help="admin port (default 0 = any free port)")
    parser.add_argument("--parent-pid", type=_pid, default=None, help="exit once this process is gone")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random generator (default: random)")
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line; exits with status 2 and a message on bad input."""
    ns = build_parser().parse_args(argv)
    return Options(
        identity=Identity(ns.service, ns.version, ns.instance, ns.namespace),
        host=ns.host,
        port=ns.port,
        admin_host=ns.admin_host,
        admin_port=ns.admin_port,
        parent_pid=ns.parent_pid,
        seed=ns.seed,
    )
