"""Each instance's serving socket in a workload host: started, killed and revived one instance at a time.

"Kill a replica" must look to Envoy like a dead pod: its port refuses connections and the connections it
had are reset. A host cannot kill a process per replica, so it closes that instance's listening socket
and aborts its connections; reviving binds the same port again. The other instances never notice.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from pytest_meshcheck.workload.echo.app import EchoApp
from pytest_meshcheck.workload.echo.connection import HttpConnection

# create_server(sock=...) calls listen() again, so the backlog must be passed there too.
BACKLOG = 1024


class Listeners:
    """The serving sockets of a host's instances, by instance name."""

    def __init__(self, apps: dict[str, EchoApp], addresses: dict[str, tuple[str, int]]) -> None:
        self.apps = apps
        self.addresses = addresses
        self.connections: dict[str, set[HttpConnection]] = {name: set() for name in apps}
        self._servers: dict[str, asyncio.Server] = {}

    def _factory(self, name: str) -> Callable[[], HttpConnection]:
        app, registry = self.apps[name], self.connections[name]
        return lambda: HttpConnection(app, keep_body=False, registry=registry)

    async def serve(self, name: str, sock: socket.socket) -> None:
        """Serve instance ``name`` on the bound socket ``sock``."""
        loop = asyncio.get_running_loop()
        self._servers[name] = await loop.create_server(self._factory(name), sock=sock, backlog=BACKLOG)

    def serving(self, name: str) -> bool:
        """Whether instance ``name`` accepts connections."""
        return name in self._servers

    def kill(self, name: str) -> None:
        """Stop accepting on the instance's port and reset every connection it has, as a dead pod would."""
        server = self._servers.pop(name, None)
        if server is not None:
            server.close()
        for conn in list(self.connections[name]):
            conn.reset()

    async def revive(self, name: str) -> None:
        """Listen on the instance's port again (the same port, so Envoy's endpoint stays valid).

        Raises:
            OSError: The port was taken meanwhile.
        """
        if name in self._servers:
            return
        host, port = self.addresses[name]
        sock = socket.create_server((host, port), backlog=BACKLOG, reuse_port=False)
        await self.serve(name, sock)

    def close(self) -> None:
        """Stop every instance and close its connections (shutdown)."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        for registry in self.connections.values():
            for conn in list(registry):
                conn.close()
