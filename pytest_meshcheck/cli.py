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
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pytest_meshcheck.errors import MeshcheckError, MeshSetupError

if TYPE_CHECKING:
    from aiohttp import web

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
    # Listed for --help only: main() hands "meshcheck lint ..." to the linter's own parser before this one
    # runs, so `meshcheck up` does not import the linter.
    sub.add_parser("lint", help="Lint policies for resilience mistakes no other analyzer finds (meshcheck lint --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshcheck`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lint"]:
        # lint parses its own arguments, so a usage error exits 4 (its documented code), not argparse's 2.
        from pytest_meshcheck.lint.cli import main as lint_main

        return lint_main(argv[1:])
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
        _forget_unhandled_keyboard_interrupt()
        return 130


def _forget_unhandled_keyboard_interrupt() -> None:
    """Keep a handled Ctrl-C from turning the exit status into death by SIGINT.

    When a KeyboardInterrupt leaves code run by ``exec`` of a string (as ``dataclasses`` does while a module
    that the start-up imports lazily defines its classes), CPython marks it unhandled, even though it is
    caught further up; under ``python -m`` the interpreter then kills itself with SIGINT at exit (status
    -2, no traceback), seen in 3 of 11 signal tests on a busy machine. The next ``exec`` of a string clears
    the mark, and there is no other way to reach it.
    """
    exec("None")


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


class _StopSignals:
    """SIGINT and SIGTERM for ``meshcheck up``, from its first line until it exits.

    The handlers are installed whatever the inherited disposition: a script's background job
    (``meshcheck up &``) starts with SIGINT ignored, so Python would never raise KeyboardInterrupt and a
    script that waits for the platform and then stops it would leave everything running.

    While the mesh starts, the first signal raises KeyboardInterrupt in the main thread, which
    :meth:`LocalMesh.start` turns into stopping every child by PID. Once serving starts, signals are
    only recorded and the event loop's own handlers take over. Every signal is recorded, so one whose
    KeyboardInterrupt got swallowed somewhere (such as in an ``Exception ignored in`` hook) still stops
    everything at the next check.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._raising = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def start_raising(self) -> None:
        """Raise KeyboardInterrupt on the first signal from now on, or at once if one came already.

        Not earlier: raised during an import, KeyboardInterrupt can come out as another exception
        (such as the RuntimeError of a failed ``__set_name__``).
        """
        if self.received is not None:
            raise KeyboardInterrupt
        self._raising = True

    def record_only(self) -> None:
        """Stop raising KeyboardInterrupt: from here on the caller checks :attr:`received` itself."""
        self._raising = False

    def ignore(self) -> None:
        """Ignore SIGINT and SIGTERM from now on.

        For the very end, when everything is stopped: a late signal must not turn the exit status into
        death by signal, or print a traceback, while the process exits.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if signum != signal.SIGINT:
            current = signal.getsignal(signal.SIGINT)
            if current != self._handle and callable(current):
                # The process group is forking a child and holds SIGINT back until the child is recorded
                # (process._ctrl_c_deferred): hand SIGTERM to that hold too, so no child goes unrecorded.
                current(signal.SIGINT, frame)
                return
        if self._raising:
            # Once: a second Ctrl-C must not interrupt the stopping that the first one started.
            self._raising = False
            raise KeyboardInterrupt


def _up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    signals = _StopSignals()
    signals.install()
    try:
        return _run_up(args, t0, signals)
    except Exception:
        # A KeyboardInterrupt that surfaced as another exception (or a failure it caused): the user
        # asked to stop, and everything was stopped on the way out.
        if signals.received is not None:
            raise KeyboardInterrupt from None
        raise
    finally:
        signals.ignore()


def _run_up(args: argparse.Namespace, t0: float, signals: _StopSignals) -> int:
    from pytest_meshcheck.chaos.destination import DestinationChaos
    from pytest_meshcheck.chaos.platform_api import build_app
    from pytest_meshcheck.local.mesh import LocalMesh
    from pytest_meshcheck.policy import PolicySet, check_policies_fit, load_policies
    from pytest_meshcheck.topology import load_topology

    signals.start_raising()
    chaos_sock = _bind(args.chaos_port, "--chaos-port")
    # Listening before the mesh starts means the chaos API accepts connections before the gateway
    # exists: a request that comes early waits in the backlog and is answered once everything is ready,
    # instead of being refused.
    chaos_sock.listen(128)
    topology = load_topology(args.topology)
    policies = PolicySet() if args.no_policies else load_policies(*(args.policies or [platform_policies_dir()]))
    for w in [*policies.warnings, *check_policies_fit(policies, topology)]:
        print(f"meshcheck: warning: {w}")

    def log(message: str) -> None:
        # The mesh is not the whole platform: "ready" is said once, when the chaos API serves too.
        if not message.startswith("local mesh ready"):
            print(f"meshcheck: {message}")

    mesh = LocalMesh(
        topology=topology,
        policies=policies,
        istio_version=args.istio_version,
        gateway_port=args.gateway_port,
        keep=args.keep,
        log=log,
    )
    chaos = DestinationChaos()
    # Built (and aiohttp imported, ~0.1 s) before the mesh starts, so that the chaos API serves within
    # milliseconds of the gateway's first 200.
    app = build_app(mesh, chaos)
    with chaos_sock, mesh:
        signals.record_only()
        return asyncio.run(_serve(mesh, app, chaos, chaos_sock, t0, signals))


def _gateway_routes(mesh: LocalMesh) -> str:
    routes = [route.prefix for route in mesh.topology.gateway_routes]
    return ", ".join(routes) if routes else "no routes: the topology has no gateway section"


async def _serve(
    mesh: LocalMesh,
    app: web.Application,
    chaos: DestinationChaos,
    chaos_sock: socket.socket,
    t0: float,
    signals: _StopSignals,
) -> int:
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if signals.received is not None:  # came after the mesh started, before these handlers
        stop.set()
    stop_waiting = threading.Event()  # ends the first-scrape wait at once when stopping
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        if not stop.is_set():
            await web.SockSite(runner, chaos_sock).start()
            port = chaos_sock.getsockname()[1]
            print(
                f"meshcheck: local mesh ready in {time.monotonic() - t0:.2f}s (Istio {mesh.istio_version} translation)"
            )
            print(f"  gateway     {mesh.gateway_url}   ({_gateway_routes(mesh)})")
            print(
                f"  chaos API   http://127.0.0.1:{port}   (POST /api/chaos/error, /api/chaos/latency; "
                "DELETE /api/chaos/scenarios/{service})"
            )
            print(f"  sidecar     {mesh.sidecar_url}   (set Host: <service>)")
            print(f"  prometheus  {mesh.prometheus_url}")
            print(f"  envoy admin {mesh.envoy_admin_url}")
            for caller in mesh.topology.callers:
                calls = ", then ".join(f"{c.service} {c.method} {c.path}" for c in caller.calls)
                print(
                    f"  calls       {caller.name} -> {calls}   (through each of its {caller.replicas} pods' sidecars)"
                )
            print("meshcheck: press Ctrl-C to stop", flush=True)

        async def announce_first_scrape() -> None:
            # Prometheus 2.42 syncs new targets on a fixed 5 s tick, so its first scrape lands ~5.5 s after
            # it started, after the mesh is ready: say when queries will answer. The wait runs in a
            # thread that ``stop_waiting`` ends within 0.1 s, since the loop's shutdown joins that thread.
            try:
                await asyncio.to_thread(mesh.wait_for_metrics, 30.0, cancel=stop_waiting)
                print(f"meshcheck: prometheus has scraped every target ({time.monotonic() - t0:.1f}s)", flush=True)
            except MeshcheckError as exc:
                if not stop_waiting.is_set():
                    print(f"meshcheck: warning: {exc}", flush=True)

        scrape_task = asyncio.create_task(announce_first_scrape())
        await stop.wait()
        stop_waiting.set()
        scrape_task.cancel()
        print("meshcheck: stopping", flush=True)
    finally:
        stop_waiting.set()
        try:
            await asyncio.to_thread(chaos.clear_all)
        finally:
            try:
                await runner.cleanup()
            finally:
                # Stopped here, not after the loop closes: closing it puts back the default handlers,
                # under which a second SIGTERM would kill this process with children still to stop.
                await asyncio.to_thread(mesh.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
