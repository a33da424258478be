"""One echo replica as a process: both listeners, signals, the parent watch and the ready line."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import signal
import socket
import sys

from pytest_meshcheck.procfs import proc_stat
from pytest_meshcheck.workload.echo.admin import AdminApp
from pytest_meshcheck.workload.echo.app import EchoApp
from pytest_meshcheck.workload.echo.cli import Options, parse_args
from pytest_meshcheck.workload.echo.connection import HttpConnection
from pytest_meshcheck.workload.echo.parent import parent_alive, set_parent_death_signal, watch_parent
from pytest_meshcheck.workload.echo.ready import ReadyInfo, ready_line

# create_server(sock=...) calls listen() again, so the backlog must be passed there too.
_BACKLOG = 1024


def _listen(host: str, port: int) -> socket.socket:
    # Bound before the event loop serves, so a busy port is reported naming its option and nothing starts.
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(addr[:2], family=family, backlog=_BACKLOG)


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
    seed = opts.seed if opts.seed is not None else random.SystemRandom().getrandbits(63)
    echo = EchoApp(opts.identity, random.Random(seed), seed)
    admin = AdminApp(echo)
    connections: set[HttpConnection] = set()
    sockets: list[socket.socket] = []
    for option, host, port in (
        ("--host/--port", opts.host, opts.port),
        ("--admin-host/--admin-port", opts.admin_host, opts.admin_port),
    ):
        try:
            sockets.append(_listen(host, port))
        except OSError as exc:
            print(f"echo: cannot listen on {host}:{port} ({option}): {exc}", file=sys.stderr)
            for sock in sockets:
                sock.close()
            return 1
    admin_ip = ipaddress.ip_address(sockets[1].getsockname()[0])
    if not admin_ip.is_loopback:
        print(
            f"echo: warning: the admin API listens on {admin_ip}, not loopback; anyone who reaches it can "
            "change chaos (use --admin-host 127.0.0.1 and port-forward instead)",
            file=sys.stderr,
        )
    server = await loop.create_server(
        lambda: HttpConnection(echo, keep_body=False, registry=connections), sock=sockets[0], backlog=_BACKLOG
    )
    admin_server = await loop.create_server(
        lambda: HttpConnection(admin, keep_body=True, registry=connections), sock=sockets[1], backlog=_BACKLOG
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if opts.parent_pid is not None:
        watcher = asyncio.create_task(watch_parent(opts.parent_pid, start_ticks, stop))
    ready = ReadyInfo(port=sockets[0].getsockname()[1], admin_port=sockets[1].getsockname()[1], pid=os.getpid())
    try:
        sys.stdout.write(ready_line(ready))
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # nobody reads the ready line; keep serving
    await stop.wait()
    server.close()
    admin_server.close()
    for conn in list(connections):
        conn.close()
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
