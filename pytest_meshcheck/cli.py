"""The ``meshcheck`` command: run the local mesh by hand, validate policies, sweep leftovers.

``meshcheck up`` brings up the platform (default topology) with its policies, an ingress on port
8090 and the platform's chaos API on port 8092, prints the URLs and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_meshcheck.errors import MeshcheckError, MeshSetupError

if TYPE_CHECKING:
    from pytest_meshcheck.chaos.destination import DestinationChaos
    from pytest_meshcheck.local.mesh import LocalMesh


def platform_policies_dir() -> Path:
    """The packaged copy of the platform README's policies (``circuit-breaker.yaml``, ``retry-timeout.yaml``)."""
    return Path(str(resources.files("pytest_meshcheck").joinpath("examples/platform")))


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number 0-65535")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshcheck", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Run the local mesh with a gateway and the chaos API until Ctrl-C")
    up.add_argument(
        "--policies",
        action="append",
        metavar="PATH",
        help="Policy file or directory (repeatable). Default: the platform README's policies",
    )
    up.add_argument("--no-policies", action="store_true", help="Run with no policies (Istio's defaults only)")
    up.add_argument("--topology", metavar="FILE", help="Topology YAML. Default: the platform (platform-core)")
    up.add_argument("--istio-version", metavar="X.Y", help="Istio release whose translation to follow")
    up.add_argument("--gateway-port", type=_port, default=8090, help="Ingress port. Default: 8090")
    up.add_argument("--chaos-port", type=_port, default=8092, help="Chaos API port. Default: 8092")
    up.add_argument("--keep", action="store_true", help="Keep the work directory (configs, logs) on exit")

    val = sub.add_parser("validate", help="Validate policy files as Istio's admission would, and print warnings")
    val.add_argument("paths", nargs="+", metavar="PATH")
    val.add_argument("--topology", metavar="FILE", help="Also check the policies fit this topology")

    sub.add_parser("cleanup", help="Stop processes and remove files left by killed meshcheck runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshcheck`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "validate":
            return _validate(args)
        from pytest_meshcheck.local.process import sweep_leftovers

        removed = sweep_leftovers(print)
        if not removed:
            print("meshcheck: nothing left over")
        return 0
    except MeshcheckError as exc:
        print(f"meshcheck: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before the chaos API serves (during start-up): the mesh has already stopped its children.
        print("meshcheck: interrupted; everything started was stopped", file=sys.stderr)
        return 130


def _validate(args: argparse.Namespace) -> int:
    from pytest_meshcheck.policy import check_policies_fit, load_policies
    from pytest_meshcheck.topology import load_topology

    policies = load_policies(*args.paths)
    warnings = list(policies.warnings)
    if args.topology:
        warnings += check_policies_fit(policies, load_topology(args.topology))
    for note in policies.skipped:
        print(f"note: {note}")
    for w in warnings:
        print(f"warning: {w}")
    print(
        f"ok: {len(policies.virtual_services)} VirtualService(s), {len(policies.destination_rules)} DestinationRule(s)"
    )
    return 0


def _bind(port: int, option: str) -> socket.socket:
    # Binding before the mesh starts both reserves the port and fails fast when it is busy.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise MeshSetupError(
            f"port 127.0.0.1:{port} is busy ({exc.strerror}); free it or choose another with {option}"
        ) from None
    return sock


def _up(args: argparse.Namespace) -> int:
    from pytest_meshcheck.chaos.destination import DestinationChaos
    from pytest_meshcheck.local.mesh import LocalMesh
    from pytest_meshcheck.policy import PolicySet, check_policies_fit, load_policies
    from pytest_meshcheck.topology import load_topology

    t0 = time.monotonic()
    # Until the event loop takes over, SIGTERM must unwind like Ctrl-C so that every child is stopped by
    # PID and the work directory removed (the default action would leave both to the next sweep).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    chaos_sock = _bind(args.chaos_port, "--chaos-port")
    topology = load_topology(args.topology)
    policies = PolicySet() if args.no_policies else load_policies(*(args.policies or [platform_policies_dir()]))
    for w in [*policies.warnings, *check_policies_fit(policies, topology)]:
        print(f"meshcheck: warning: {w}")
    mesh = LocalMesh(
        topology=topology,
        policies=policies,
        istio_version=args.istio_version,
        gateway_port=args.gateway_port,
        keep=args.keep,
        log=lambda m: print(f"meshcheck: {m}"),
    )
    chaos = DestinationChaos()
    with chaos_sock, mesh:
        return asyncio.run(_serve(mesh, chaos, chaos_sock, t0))


async def _serve(mesh: LocalMesh, chaos: DestinationChaos, chaos_sock: socket.socket, t0: float) -> int:
    from aiohttp import web

    from pytest_meshcheck.chaos.platform_api import build_app

    runner = web.AppRunner(build_app(mesh, chaos), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, chaos_sock).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        port = chaos_sock.getsockname()[1]
        print(f"meshcheck: local mesh ready in {time.monotonic() - t0:.2f}s (Istio {mesh.istio_version} translation)")
        print(f"  gateway     {mesh.gateway_url}   (/api/catalog, /api/orders, /api/payments, /api/inventory)")
        print(
            f"  chaos API   http://127.0.0.1:{port}   (POST /api/chaos/error, /api/chaos/latency; "
            "DELETE /api/chaos/scenarios/{service})"
        )
        print(f"  sidecar     {mesh.sidecar_url}   (set Host: <service>)")
        print(f"  prometheus  {mesh.prometheus_url}")
        print(f"  envoy admin {mesh.envoy_admin_url}")
        print("meshcheck: press Ctrl-C to stop", flush=True)

        async def announce_first_scrape() -> None:
            # Prometheus 2.42 syncs new targets on a fixed 5 s tick, so its first scrape lands ~5.5 s after
            # it started, after the mesh is ready: say when queries will answer.
            try:
                await asyncio.to_thread(mesh.wait_for_metrics, 30.0)
                print(f"meshcheck: prometheus has scraped every target ({time.monotonic() - t0:.1f}s)", flush=True)
            except MeshcheckError as exc:
                print(f"meshcheck: warning: {exc}", flush=True)

        scrape_task = asyncio.create_task(announce_first_scrape())
        await stop.wait()
        scrape_task.cancel()
        print("meshcheck: stopping", flush=True)
    finally:
        try:
            await asyncio.to_thread(chaos.clear_all)
        finally:
            await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
