"""A stdlib HTTP/1.1 upstream for load-engine tests: ``python tests/doubles/upstream_server.py``.

It binds 127.0.0.1 on an OS-assigned port and prints ``port N`` once listening. Every response carries
``x-meshcheck-instance``. Control endpoints (answered at once, not counted):

- ``/__set?delay=S``: sleep S seconds before every answer;
- ``/__stall?seconds=S``: every request until S seconds from now waits until then;
- ``/__stats``: JSON ``{requests, in_flight, max_in_flight}``;
- ``/__clear``: zero the counters.

A request for ``/chunked`` is answered with a chunked body (two chunks), so Envoy passes chunking on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit


class _State:
    def __init__(self, instance: str, delay: float) -> None:
        self.instance = instance
        self.delay = delay
        self.stall_until = 0.0
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def control(self, path: str, query: str) -> tuple[int, bytes]:
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        if path == "/__set":
            self.delay = float(q.get("delay", self.delay))
        elif path == "/__stall":
            self.stall_until = time.monotonic() + float(q.get("seconds", "0"))
        elif path == "/__clear":
            self.requests = self.max_in_flight = 0
        elif path != "/__stats":
            return 404, b'{"error": "unknown control path"}'
        stats = {"requests": self.requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}
        return 200, json.dumps(stats).encode()


def _response(status: int, body: bytes, instance: str, chunked: bool = False) -> bytes:
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {len(body)}"
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
        f"{framing}\r\ncontent-type: text/plain\r\nx-meshcheck-instance: {instance}\r\n\r\n"
    )
    if chunked:
        half = len(body) // 2
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]) if part)
        body += b"0\r\n\r\n"
    return head.encode() + body


async def _serve(state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            parts = urlsplit(target)
            if parts.path.startswith("/__"):
                status, body = state.control(parts.path, parts.query)
            else:
                state.requests += 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                try:
                    wait = max(state.delay, state.stall_until - time.monotonic())
                    if wait > 0:
                        await asyncio.sleep(wait)
                finally:
                    state.in_flight -= 1
                status, body = 200, f"{state.instance}\n".encode()
            writer.write(_response(status, body, state.instance, chunked=parts.path == "/chunked"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _main(instance: str, delay: float) -> None:
    state = _State(instance, delay)
    server = await asyncio.start_server(lambda r, w: _serve(state, r, w), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse ``--instance`` and ``--delay`` and serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instance", default="u0")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(_main(args.instance, args.delay))


if __name__ == "__main__":
    main()
