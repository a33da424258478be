from __future__ import annotations

import pytest

from pytest_meshcheck.load import ClosedLoop, LoadError, run_load
from pytest_meshcheck.load.request import build_request


def test_request_bytes_carry_host_headers_and_target() -> None:
    spec = build_request(
        "http://127.0.0.1:15001/orders/1?x=2", host="order-service", headers={"x-user": "a"}, record_headers=["Server"]
    )
    assert (spec.address, spec.port, spec.record_headers) == ("127.0.0.1", 15001, ("server",))
    assert spec.encode() == b"GET /orders/1?x=2 HTTP/1.1\r\nHost: order-service\r\nx-user: a\r\n\r\n"


def test_host_defaults_to_url_authority_or_a_host_header() -> None:
    assert build_request("http://localhost:8080").encode() == b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"
    assert build_request("http://127.0.0.1:1/", headers={"Host": "svc"}).host == "svc"
    assert build_request("http://127.0.0.1:1/", headers={"Host": "svc"}, host="other").host == "other"


def test_post_without_body_sends_content_length_zero() -> None:
    assert b"\r\nContent-Length: 0\r\n" in build_request("http://127.0.0.1:1/", method="post").encode()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "https://127.0.0.1:443/"}, r"^url: .*http://"),
        ({"url": "127.0.0.1:80"}, r"^url: "),
        ({"url": "http://:80/"}, r"^url: .*no host"),
        ({"url": "http://127.0.0.1:99999/"}, r"^url: .*invalid port"),
        ({"method": "GE T"}, r"^method: "),
        ({"headers": {"x-a": "1\r\nx-injected: 2"}}, r"^headers\['x-a'\]: .*CR or LF"),
        ({"headers": {"bad name": "1"}}, r"^headers\['bad name'\]: "),
        ({"headers": {"Content-Length": "5"}}, r"set by the engine"),
        ({"host": "a\nb"}, r"^host: "),
        ({"record_headers": ["x y"]}, r"^record_headers\['x y'\]: "),
    ],
)
def test_bad_request_arguments_name_the_argument(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:1/", **kwargs}
    url = args.pop("url")
    with pytest.raises(LoadError, match=match):
        build_request(url, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"timeout": 0}, r"^timeout: "), ({"grace": -1}, r"^grace: "), ({"profile": "8 clients"}, r"^profile: ")],
)
def test_run_load_rejects_bad_arguments_before_starting_anything(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"profile": ClosedLoop(1, 0.1, 1), **kwargs}
    with pytest.raises(LoadError, match=match):
        run_load("http://127.0.0.1:1/", **args)  # type: ignore[arg-type]
