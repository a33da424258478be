"""The hand-written HTTP/1.1 response parser, fed real response bytes split at every possible point."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pytest_meshcheck.load.http1 import Http1Connection
from pytest_meshcheck.load.records import PROTOCOL, RESET


class Sink:
    def __init__(self) -> None:
        self.responses: list[tuple[int, int, bytes | None, bytes | None, bool, tuple[bytes | None, ...], bool]] = []
        self.failures: list[tuple[int, int]] = []

    def on_response(
        self,
        conn: Http1Connection,
        status: int,
        instance: bytes | None,
        attempts: bytes | None,
        overloaded: bool,
        extra: Sequence[bytes | None],
    ) -> None:
        self.responses.append((conn.request, status, instance, attempts, overloaded, tuple(extra), conn.reusable))
        conn.request = -1

    def on_failure(self, conn: Http1Connection, kind: int) -> None:
        self.failures.append((conn.request, kind))


ENVOY_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\ncontent-type: text/plain\r\n"
    b"X-Meshcheck-Instance:  u2 \r\nx-envoy-overloaded: true\r\nx-envoy-attempt-count: 3\r\n"
    b"date: Wed, 25 Nov 2026 19:07:45 GMT\r\nserver: envoy\r\n\r\nupstream overflow\r\n"
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-meshcheck-instance: u0\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ntrailer: x\r\n\r\n"
)


def feed(conn: Http1Connection, data: bytes, cuts: Sequence[int]) -> None:
    last = 0
    for cut in [*cuts, len(data)]:
        conn.data_received(data[last:cut])
        last = cut


@pytest.mark.parametrize("raw", [ENVOY_503, CHUNKED], ids=["content-length", "chunked"])
def test_every_split_point_gives_the_same_response(raw: bytes) -> None:
    expected = None
    for cut in range(1, len(raw)):
        sink = Sink()
        conn = Http1Connection(sink, ["server", "date"], head_only=False)
        conn.request = 7
        feed(conn, raw, [cut])
        assert sink.failures == []
        assert len(sink.responses) == 1, f"split at {cut}"
        expected = expected or sink.responses[0]
        assert sink.responses[0] == expected, f"split at {cut}"
    assert expected is not None


def test_headers_are_extracted_case_insensitively_and_stripped() -> None:
    sink = Sink()
    conn = Http1Connection(sink, ["Server", "x-absent"], head_only=False)
    conn.request = 3
    conn.data_received(ENVOY_503)
    assert sink.responses == [(3, 503, b"u2", b"3", True, (b"envoy", None), True)]


def test_byte_by_byte_chunked_then_keep_alive_second_response() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.request = 0
    feed(conn, CHUNKED, list(range(1, len(CHUNKED))))
    assert [r[:3] for r in sink.responses] == [(0, 200, b"u0")]
    conn.request = 1
    conn.data_received(ENVOY_503)
    assert [r[:2] for r in sink.responses] == [(0, 200), (1, 503)]


def test_interim_100_continue_is_skipped() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.request = 0
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nx-envoy-attempt-count: 2\r\n\r\n")
    assert sink.responses == [(0, 204, None, b"2", False, (), True)]


def test_connection_close_header_makes_it_not_reusable() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.request = 0
    conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n")
    assert sink.responses[0][-1] is False


def test_head_response_has_no_body_despite_content_length() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=True)
    conn.request = 0
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
    assert [r[:2] for r in sink.responses] == [(0, 200)]


def test_body_until_close_completes_on_eof() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.request = 0
    conn.data_received(b"HTTP/1.0 200 OK\r\n\r\nsome body")
    assert sink.responses == []
    conn.eof_received()
    assert [r[:2] for r in sink.responses] == [(0, 200)]
    assert sink.responses[0][-1] is False


def test_connection_lost_mid_response_is_a_reset() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.request = 4
    conn.data_received(ENVOY_503[:60])
    conn.connection_lost(ConnectionResetError())
    assert sink.responses == []
    assert sink.failures == [(4, RESET)]


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_responses_are_protocol_errors(raw: bytes) -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.request = 9
    conn.data_received(raw)
    assert sink.responses == []
    assert sink.failures == [(9, PROTOCOL)]
    assert conn.request == -1
    assert conn.reusable is False


def test_unsolicited_response_is_a_protocol_error_not_a_record() -> None:
    sink = Sink()
    conn = Http1Connection(sink, [], head_only=False)
    conn.data_received(ENVOY_503)
    assert sink.responses == []
    assert sink.failures == []
    assert conn.reusable is False
