"""A local TCP port that reaches a pod's port through the Kubernetes API (like ``kubectl port-forward``).

The ``kubernetes`` client's :func:`kubernetes.stream.portforward` gives one byte stream per call over
a websocket; this listener on ``127.0.0.1`` (OS-assigned port) opens one such stream per accepted
connection and copies bytes both ways on a thread, so ordinary HTTP clients (httpx, urllib) can talk
to the agent or to Prometheus as if they were local.

Usage::

    with PortForward(open_stream, "pod istio-system/prometheus-abc:9090") as fwd:
        httpx.get(fwd.url + "/-/ready")
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pytest_meshcheck.errors import MeshSetupError

#: Opens one stream to the pod port: returns a socket-like object and a function giving the
#: Kubernetes error text for the stream (``None`` when there is none).
StreamOpener = Callable[[], tuple[Any, Callable[[], str | None]]]

_CHUNK = 64 * 1024


class PortForward:
    """Listens on ``127.0.0.1:<port>`` and relays each connection through a new stream.

    Args:
        open_stream: Opens a stream to the pod port (see :data:`StreamOpener`).
        description: What is forwarded, for messages (``pod ns/name:port``).
        log: Receives one line per failed stream.
    """

    def __init__(self, open_stream: StreamOpener, description: str, log: Callable[[str], None] | None = None) -> None:
        self._open = open_stream
        self.description = description
        self._log = log or (lambda _m: None)
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[Any] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.errors: list[str] = []
        self.port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<local port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PortForward:
        """Open the local listener and start accepting."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        accept = threading.Thread(target=self._accept_loop, name=f"port-forward {self.description}", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            remote, error = self._open()
        except Exception as exc:  # the client raises ApiException, websocket and socket errors
            self._fail(f"cannot open a port-forward stream to {self.description}: {exc}")
            client.close()
            return
        with self._lock:
            self._sockets.update((client, remote))
        try:
            self._relay(client, remote)
        finally:
            text = error()
            if text:
                self._fail(f"port-forward to {self.description}: {text.strip()}")
            for s in (client, remote):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._sockets.difference_update((client, remote))

    def _relay(self, client: socket.socket, remote: Any) -> None:
        pair = {client: remote, remote: client}
        while not self._closed.is_set():
            try:
                readable, _, _ = select.select(list(pair), [], [], 0.5)
            except (OSError, ValueError):
                return
            for src in readable:
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                try:
                    pair[src].sendall(data)
                except OSError:
                    return

    def _fail(self, message: str) -> None:
        self.errors.append(message)
        self._log(message)

    def close(self) -> None:
        """Stop accepting, close every stream and wait briefly for the relay threads."""
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()
        for t in threads:
            t.join(timeout=2.0)

    def check(self) -> None:
        """Raise the first stream error seen, if any.

        Raises:
            MeshSetupError: A stream could not be opened or the pod side refused it.
        """
        if self.errors:
            raise MeshSetupError(self.errors[0])
