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


class Trickler:
    def __init__(self, answer: bytes, gap: float = 0.05) -> None:
        self.answer, self.gap = answer, gap
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/chat/completions"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:  # keep-alive: one answer per request until the client goes
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                try:
                    if not self.gap:
                        conn.sendall(self.answer)
                        continue
                    for byte in self.answer:
                        conn.sendall(bytes([byte]))
                        time.sleep(self.gap)
                except OSError:
                    return

    def close(self) -> None:
        self._listener.close()


class RefusingProxy:
    """Records each CONNECT target and answers 403."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.targets.append(data.split(b"\r\n")[0].decode().rsplit(" ", 1)[0])
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._listener.close()


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
    server = Trickler(ANSWERS[part])
    try:
        started = time.monotonic()
        with pytest.raises(AttemptError) as failed:
            HttpTransport().post_json(server.url, {"model": "m"}, {}, timeout=0.5, max_bytes=1 << 20)
        elapsed = time.monotonic() - started
        assert failed.value.timeout and failed.value.reason == "timeout"
        assert elapsed < 0.8
    finally:
        server.close()


def test_a_stream_whose_head_trickles_times_out_at_the_deadline() -> None:
    server = Trickler(ANSWERS["head"])
    try:
        started = time.monotonic()
        with pytest.raises(AttemptError) as failed:
            HttpTransport().post_stream(server.url, {"model": "m"}, {}, timeout=0.5, max_bytes=1 << 20)
        assert failed.value.timeout
        assert time.monotonic() - started < 0.8
    finally:
        server.close()


def test_a_prompt_answer_is_unaffected_by_the_watchdog() -> None:
    server = Trickler(ANSWERS["body"], gap=0)
    try:
        transport = HttpTransport()
        for _ in range(3):  # the pooled connection is reused and still watched
            data, _headers = transport.post_json(server.url, {}, {}, timeout=2.0, max_bytes=1 << 20)
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
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RefusingProxy]:
    server = RefusingProxy()
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.port}")
    yield server
    server.close()


def test_https_upstreams_go_through_https_proxy(proxy: RefusingProxy) -> None:
    with pytest.raises(AttemptError):
        HttpTransport().post_json("https://models.example.test/v1/chat", {}, {}, timeout=2.0, max_bytes=1024)
    assert proxy.targets == ["CONNECT models.example.test:443"]


def test_no_proxy_names_the_upstreams_reached_directly(proxy: RefusingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost,.example.test")
    with pytest.raises(AttemptError) as failed:  # reached directly: the .test name does not resolve
        HttpTransport().post_json("https://models.example.test/v1/chat", {}, {}, timeout=2.0, max_bytes=1024)
    assert failed.value.reason == "connect_failed"
    assert proxy.targets == []


def test_plain_http_loopback_upstreams_never_use_the_proxy(proxy: RefusingProxy) -> None:
    server = Trickler(ANSWERS["body"], gap=0)
    try:
        data, _ = HttpTransport().post_json(server.url, {}, {}, timeout=2.0, max_bytes=1 << 20)
        assert data["object"] == "chat.completion" and proxy.targets == []
    finally:
        server.close()
