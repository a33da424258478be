"""An echo process, one replica (a pod) or a workload host of many: listeners, signals, parent watch, ready line.

A host keeps, per instance, its own listening socket, identity, chaos state, counters and outbound
connections, so each still looks like its own pod to Envoy; only the event loop, the admin port and the
Python interpreter (about 25 MB) are shared. That is what lets a 300-replica topology run in one process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import signal
import socket
import sys

from pytest_meshcheck.procfs import proc_stat
from pytest_meshcheck.workload.echo.admin import AdminApp, HostAdmin
from pytest_meshcheck.workload.echo.app import EchoApp
from pytest_meshcheck.workload.echo.calls import Outbound
from pytest_meshcheck.workload.echo.cli import Options, parse_args
from pytest_meshcheck.workload.echo.connection import Handler, HttpConnection
from pytest_meshcheck.workload.echo.ledger import Ledger
from pytest_meshcheck.workload.echo.listeners import BACKLOG, Listeners
from pytest_meshcheck.workload.echo.parent import parent_alive, set_parent_death_signal, watch_parent
from pytest_meshcheck.workload.echo.ready import ReadyInfo, ready_line


def _listen(host: str, port: int) -> socket.socket:
    # Bound before the event loop serves, so a busy port is reported naming its option and nothing starts.
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(addr[:2], family=family, backlog=BACKLOG)


def _bind(host: str, port: int, option: str) -> socket.socket:
    try:
        return _listen(host, port)
    except OSError as exc:
        print(f"echo: cannot listen on {host}:{port} ({option}): {exc}", file=sys.stderr)
        raise


async def serve(opts: Options) -> int:
    """Run until SIGTERM/SIGINT or parent death; the exit status."""
    loop = asyncio.get_running_loop()
    start_ticks: int | None = None
    if opts.parent_pid is not None:
        stat = proc_stat(opts.parent_pid)
        start_ticks = stat[1] if stat is not None else None
        if not parent_alive(opts.parent_pid, start_ticks):
            print(f"echo: --parent-pid {opts.parent_pid} is not running; exiting", file=sys.stderr)
            return 1
        set_parent_death_signal(opts.parent_pid)
    connections: set[HttpConnection] = set()
    apps: dict[str, EchoApp] = {}
    ledgers: dict[tuple[str, str], Ledger] = {}
    sockets: list[tuple[EchoApp, socket.socket]] = []
    try:
        for inst in opts.spec.instances:
            seed = inst.seed if inst.seed is not None else random.SystemRandom().getrandbits(63)
            ident = inst.identity
            # A host's instances of one service share a ledger, as replicas share a database; a pod keeps its own.
            ledger = None if opts.spec.single else ledgers.setdefault((ident.namespace, ident.service), Ledger())
            app = EchoApp(
                ident, random.Random(seed), seed, calls=inst.calls, outbound=Outbound(inst.outbound), ledger=ledger
            )
            apps[ident.instance] = app
            option = "--host/--port" if opts.spec.single else f"--host-spec instance {ident.instance}"
            sockets.append((app, _bind(inst.host, inst.port, option)))
        admin_sock = _bind(opts.admin_host, opts.admin_port, "--admin-host/--admin-port")
    except OSError:
        for _, sock in sockets:
            sock.close()
        return 1
    admin_ip = ipaddress.ip_address(admin_sock.getsockname()[0])
    if not admin_ip.is_loopback:
        print(
            f"echo: warning: the admin API listens on {admin_ip}, not loopback; anyone who reaches it can "
            "change chaos (use --admin-host 127.0.0.1 and port-forward instead)",
            file=sys.stderr,
        )
    ports = {app.identity.instance: sock.getsockname()[1] for app, sock in sockets}
    listeners = Listeners(apps, {app.identity.instance: sock.getsockname()[:2] for app, sock in sockets})
    for app, sock in sockets:
        await listeners.serve(app.identity.instance, sock)
    admin: Handler = AdminApp(next(iter(apps.values()))) if opts.spec.single else HostAdmin(apps, ports, listeners)
    admin_server = await loop.create_server(
        lambda: HttpConnection(admin, keep_body=True, registry=connections), sock=admin_sock, backlog=BACKLOG
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if opts.parent_pid is not None:
        watcher = asyncio.create_task(watch_parent(opts.parent_pid, start_ticks, stop))
    ready = ReadyInfo(
        port=next(iter(ports.values())),
        admin_port=admin_sock.getsockname()[1],
        pid=os.getpid(),
        instances={} if opts.spec.single else ports,
    )
    try:
        sys.stdout.write(ready_line(ready))
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # nobody reads the ready line; keep serving
    await stop.wait()
    admin_server.close()
    listeners.close()
    for conn in list(connections):
        conn.close()
    for app in apps.values():
        app.outbound.close()
    if watcher is not None:
        watcher.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python3 echo.py --service S --version V --instance I --namespace N``."""
    opts = parse_args(argv)
    try:
        return asyncio.run(serve(opts))
    except KeyboardInterrupt:
        return 0
