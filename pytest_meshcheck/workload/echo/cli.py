"""The echo command line: one instance (a pod), or ``--host-spec FILE`` for a workload host of many.

One instance: ``echo.py --service S --version V --instance I --namespace N [options]``. A host (the local
mesh): ``echo.py --host-spec FILE``.

Bad input exits with status 2 and a message naming the option, as argparse does.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pytest_meshcheck.workload.echo.calls import CallSpec, parse_calls
from pytest_meshcheck.workload.echo.host_spec import HostSpec, InstanceSpec, load_host_spec
from pytest_meshcheck.workload.echo.replica import Identity


@dataclass(frozen=True)
class Options:
    """Parsed command line: the instances to serve and where the admin API listens."""

    spec: HostSpec
    admin_host: str
    admin_port: int
    parent_pid: int | None


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


def _calls(text: str) -> tuple[CallSpec, ...]:
    try:
        return parse_calls(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, such as 127.0.0.1:15001, got {text!r}")
    return host, int(port)


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
    parser = argparse.ArgumentParser(
        prog="echo.py", description="meshcheck echo workload: one replica, or a host of many (--host-spec)."
    )
    parser.add_argument(
        "--host-spec",
        default=None,
        help="JSON file listing the instances to serve in this process (the local mesh's workload host); "
        "replaces --service/--version/--instance/--namespace/--port/--seed/--calls/--outbound",
    )
    parser.add_argument("--service", type=_name, help="service name, such as reviews")
    parser.add_argument("--version", type=_name, help="version label, such as v1")
    parser.add_argument("--instance", type=_name, help="replica id, such as reviews-v1-0")
    parser.add_argument("--namespace", type=_name, help="namespace, such as default")
    parser.add_argument(
        "--calls",
        type=_calls,
        default=(),
        help='dependency calls per request, in order, as JSON: [{"service": "payment-service", "authority": '
        '"payment-service.default.svc.cluster.local:8080", "method": "POST", "path": "/pay", "on_error": "fail"}]',
    )
    parser.add_argument(
        "--outbound",
        type=_address,
        default=None,
        help="HOST:PORT every call connects to (the pod's sidecar); default: the call's authority",
    )
    parser.add_argument("--host", default="127.0.0.1", help="serving address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="serving port (default 0 = any free port)")
    parser.add_argument("--admin-host", default="127.0.0.1", help="admin address (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=_port, default=0, help="admin port (default 0 = any free port)")
    parser.add_argument("--parent-pid", type=_pid, default=None, help="exit once this process is gone")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random generator (default: random)")
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line; exits with status 2 and a message on bad input."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.host_spec is not None:
        try:
            spec = load_host_spec(ns.host_spec)
        except ValueError as exc:
            parser.error(f"argument --host-spec: {exc}")
    else:
        missing = [f"--{k}" for k in ("service", "version", "instance", "namespace") if getattr(ns, k) is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)} (or --host-spec FILE)")
        identity = Identity(ns.service, ns.version, ns.instance, ns.namespace)
        spec = HostSpec((InstanceSpec(identity, ns.host, ns.port, ns.seed, ns.calls, ns.outbound),), single=True)
    return Options(spec=spec, admin_host=ns.admin_host, admin_port=ns.admin_port, parent_pid=ns.parent_pid)
