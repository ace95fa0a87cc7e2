"""The upstream transport's whole-attempt deadline and proxy use, against loopback servers speaking real HTTP.

A trickling server sends one byte every 50 ms, so no single socket wait ever times out: only a deadline over the
whole attempt (DNS, connect, TLS, head and body) ends it. The proxy is a loopback HTTP proxy that records the CONNECT
requests it is sent and refuses them, which is all it takes to see whether a call went through it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bulwark.upstreams.guard import AttemptError
from bulwark.upstreams.transport import HttpTransport
from tests.loopback import ConnectProxy, TrickleServer

CHAT = "/v1/chat/completions"
BODY = b'{"id":"x","object":"chat.completion","choices":[]}' + b" " * 300
ANSWERS = {
    "head": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 300 + b"\r\n\r\n{}",
    "body": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"1\r\n%s\r\n" % bytes([c]) for c in BODY)
    + b"0\r\n\r\n",
}


@pytest.mark.parametrize("part", sorted(ANSWERS))
def test_a_trickled_answer_times_out_at_the_attempt_deadline(part: str) -> None:
    """Given an upstream that trickles its head or body (8-20 s in all), when the attempt's budget is 0.5 s, then the
    attempt fails as a timeout (504 to the client) within the budget plus one scheduling slice."""
    server = TrickleServer(ANSWERS[part])
    try:
        started = time.monotonic()
        with pytest.raises(AttemptError) as failed:
            HttpTransport().post_json(server.url(CHAT), {"model": "m"}, {}, timeout=0.5, max_bytes=1 << 20)
        elapsed = time.monotonic() - started
        assert failed.value.timeout and failed.value.reason == "timeout"
        assert elapsed < 0.8
    finally:
        server.close()


def test_a_stream_whose_head_trickles_times_out_at_the_deadline() -> None:
    server = TrickleServer(ANSWERS["head"])
    try:
        started = time.monotonic()
        with pytest.raises(AttemptError) as failed:
            HttpTransport().post_stream(server.url(CHAT), {"model": "m"}, {}, timeout=0.5, max_bytes=1 << 20)
        assert failed.value.timeout
        assert time.monotonic() - started < 0.8
    finally:
        server.close()


def test_a_prompt_answer_is_unaffected_by_the_watchdog() -> None:
    server = TrickleServer(ANSWERS["body"], gap=0)
    try:
        transport = HttpTransport()
        for _ in range(3):  # the pooled connection is reused and still watched
            data, _headers = transport.post_json(server.url(CHAT), {}, {}, timeout=2.0, max_bytes=1 << 20)
            assert data["object"] == "chat.completion"
    finally:
        server.close()


def test_a_hanging_resolver_costs_the_attempt_its_budget_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo has no timeout; the resolver is the one part replaced (no DNS server can be made to hang here)."""
    real = socket.getaddrinfo
    release = threading.Event()

    def hanging(host: str, *args: object, **kwargs: object) -> object:
        if host == "upstream.example.test":
            release.wait(10)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        with pytest.raises(AttemptError) as failed:
            HttpTransport().post_json("http://upstream.example.test/v1", {}, {}, timeout=0.4, max_bytes=1024)
        assert failed.value.timeout
        assert time.monotonic() - started < 0.7
    finally:
        release.set()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    server = ConnectProxy(status=403)
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.port}")
    yield server
    server.close()


def test_https_upstreams_go_through_https_proxy(proxy: ConnectProxy) -> None:
    with pytest.raises(AttemptError):
        HttpTransport().post_json("https://models.example.test/v1/chat", {}, {}, timeout=2.0, max_bytes=1024)
    assert [line.rsplit(" ", 1)[0] for line in proxy.request_lines] == ["CONNECT models.example.test:443"]


def test_no_proxy_names_the_upstreams_reached_directly(proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost,.example.test")
    with pytest.raises(AttemptError) as failed:  # reached directly: the .test name does not resolve
        HttpTransport().post_json("https://models.example.test/v1/chat", {}, {}, timeout=2.0, max_bytes=1024)
    assert failed.value.reason == "connect_failed"
    assert proxy.connects == []


def test_plain_http_loopback_upstreams_never_use_the_proxy(proxy: ConnectProxy) -> None:
    server = TrickleServer(ANSWERS["body"], gap=0)
    try:
        data, _ = HttpTransport().post_json(server.url(CHAT), {}, {}, timeout=2.0, max_bytes=1 << 20)
        assert data["object"] == "chat.completion" and proxy.connects == []
    finally:
        server.close()
