"""bulwark.aws.keepalive's HTTP/1.1 client against a loopback server that answers with scripted bytes.

Each test scripts what the peer sends on the wire (well-formed, chunked, interim, truncated, oversized, hostile) and
checks the client's reading of it: the right body, the connection reused or not, and every broken answer an
``HttpProtocolError`` (a ConnectionError, which callers fail closed on), never a hang.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bulwark.aws import keepalive
from bulwark.aws.keepalive import HttpProtocolError, KeepAlivePool, ServerClosed
from tests.loopback import TrickleServer

Script = Callable[[int, int], bytes | None]  # (connection number, request number on it) -> bytes to send, None: close


class Close(bytes):
    """Bytes after which the server closes the connection."""


class ScriptedServer:
    """Reads each request (head + Content-Length body) and answers what the script says, on 127.0.0.1."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        with conn:
            for index in range(100):
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                reply = self.script(number, index)
                if reply is None:
                    return
                conn.sendall(reply)
                if isinstance(reply, Close):
                    return

    def pool(self, **kwargs: object) -> KeepAlivePool:
        return KeepAlivePool("127.0.0.1", self.port, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def test_a_request_is_framed_exactly_and_the_connection_is_reused(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda conn, index: ok())
    pool = server.pool()
    for _ in range(3):
        status, headers, body = pool.send("POST", "/x?a=1", {"X-Amz-Target": "T.Op"}, b"{}", 2.0)
        assert (status, body, headers.get("CONTENT-TYPE")) == (200, b'{"ok":true}', "application/json")
    assert server.connections == 1
    assert (
        server.requests[0]
        == (
            f"POST /x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Length: 2\r\nX-Amz-Target: T.Op\r\n\r\n{}"
        ).encode()
    )


def test_chunked_answers_with_extensions_and_trailers_are_joined(serve: Callable[[Script], ScriptedServer]) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = serve(lambda conn, index: chunked)
    pool = server.pool()
    assert pool.send("GET", "/", {}, None, 2.0)[2] == b"hello world"
    assert pool.send("GET", "/", {}, None, 2.0)[2] == b"hello world"
    assert server.connections == 1


def test_interim_answers_are_skipped(serve: Callable[[Script], ScriptedServer]) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
    server = serve(lambda conn, index: interim + ok())
    assert server.pool().send("POST", "/", {}, b"", 2.0)[0] == 200


def test_http_1_0_and_connection_close_are_not_reused(serve: Callable[[Script], ScriptedServer]) -> None:
    answers = [b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", ok(extra=b"Connection: close\r\n")]
    server = serve(lambda conn, index: answers[(conn - 1) % 2] if index == 0 else None)
    pool = server.pool()
    pool.send("GET", "/", {}, None, 2.0)
    pool.send("GET", "/", {}, None, 2.0)
    pool.send("GET", "/", {}, None, 2.0)
    assert server.connections == 3


def test_an_answer_without_length_is_read_to_the_close(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda conn, index: Close(b"HTTP/1.1 200 OK\r\n\r\nall of it"))
    assert server.pool().send("GET", "/", {}, None, 2.0)[2] == b"all of it"


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb"],
    ids=["crlf", "lf", "cr", "nul", "del"],
)
def test_header_injection_is_refused_before_anything_is_sent(
    serve: Callable[[Script], ScriptedServer], value: str
) -> None:
    server = serve(lambda conn, index: ok())
    pool = server.pool()
    with pytest.raises(ValueError, match="invalid"):
        pool.send("POST", "/", {"X-Value": value}, b"", 2.0)
    with pytest.raises(ValueError, match="invalid"):
        pool.send("POST", f"/{value}".replace(" ", ""), {}, b"", 2.0)
    time.sleep(0.05)
    assert server.requests == []


def test_framing_headers_are_the_connections_own(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda conn, index: ok())
    for name in ("Content-Length", "transfer-encoding"):
        with pytest.raises(ValueError, match="set by the connection"):
            server.pool().send("POST", "/", {name: "0"}, b"", 2.0)


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: 1\r\n folded: continuation\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * (keepalive.MAX_HEADERS + 1) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nA: " + b"x" * (keepalive.MAX_LINE + 10) + b"\r\n\r\n",
    ],
    ids=[
        "not-http",
        "http2",
        "status-4-digits",
        "status-below-100",
        "header-without-colon",
        "obsolete-folding",
        "conflicting-lengths",
        "negative-length",
        "length-over-limit",
        "unknown-encoding",
        "bad-chunk-size",
        "bad-chunk-end",
        "truncated-body",
        "too-many-headers",
        "line-too-long",
    ],
)
def test_broken_answers_are_protocol_errors_and_the_connection_is_dropped(
    serve: Callable[[Script], ScriptedServer], answer: bytes
) -> None:
    server = serve(lambda conn, index: Close(answer) if conn == 1 else ok())
    pool = server.pool()
    with pytest.raises(HttpProtocolError):
        pool.send("GET", "/", {}, None, 2.0)
    assert pool.send("GET", "/", {}, None, 2.0)[0] == 200  # a fresh connection, not the broken one
    assert server.connections == 2


def test_an_answer_over_the_body_limit_is_refused(
    serve: Callable[[Script], ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keepalive, "MAX_BODY", 1000)
    server = serve(lambda conn, index: [ok(b"x" * 1001), Close(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 5000)][conn - 1])
    pool = server.pool()
    with pytest.raises(HttpProtocolError, match="Content-Length"):
        pool.send("GET", "/", {}, None, 2.0)
    with pytest.raises(HttpProtocolError, match="too large"):
        pool.send("GET", "/", {}, None, 2.0)


def test_junk_after_an_answer_means_the_connection_is_not_reused(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda conn, index: ok() + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" if conn == 1 else ok())
    pool = server.pool()
    pool.send("GET", "/", {}, None, 2.0)
    pool.send("GET", "/", {}, None, 2.0)
    assert server.connections == 2


@pytest.mark.parametrize("resend", [True, False])
def test_a_reused_connection_closed_without_an_answer(serve: Callable[[Script], ScriptedServer], resend: bool) -> None:
    """Resent once where a repeat is harmless; otherwise ServerClosed (a Lambda Invoke is never sent twice)."""
    server = serve(lambda conn, index: ok() if index == 0 else None)
    pool = server.pool(resend_on_stale=resend)
    pool.send("POST", "/", {}, b"", 2.0)
    time.sleep(0.01)  # the server is waiting for a second request on the connection, which it will close
    if resend:
        assert pool.send("POST", "/", {}, b"", 2.0)[0] == 200
        assert server.connections == 2
    else:
        with pytest.raises(ServerClosed):
            pool.send("POST", "/", {}, b"", 2.0)


def test_a_silent_server_times_out_within_the_read_timeout(serve: Callable[[Script], ScriptedServer]) -> None:
    def silent(conn: int, index: int) -> bytes:
        time.sleep(2)
        return b""

    server = serve(silent)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        server.pool().send("GET", "/", {}, None, 0.2)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 400 + b"\r\n\r\n", id="trickled-headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n" + b"a" * 400, id="trickled-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * 400, id="trickled-body-until-close"),
    ],
)
def test_a_trickling_server_does_not_extend_the_deadline(answer: bytes) -> None:
    """Given a server that sends a byte every 50 ms (400 bytes: 20 s), when the call's budget is 0.5 s, then the call
    ends with DeadlineExceeded within the budget (plus one socket wait), not when the answer completes."""
    server = TrickleServer(answer)
    try:
        started = time.monotonic()
        with pytest.raises(keepalive.DeadlineExceeded):
            KeepAlivePool("127.0.0.1", server.port).send("GET", "/", {}, None, 0.5)
        assert time.monotonic() - started < 0.8
    finally:
        server.close()


def test_a_hanging_resolver_is_cut_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo has no timeout of its own; a resolver that hangs (a dead DNS server) costs the call its budget,
    not the resolver's retries. The resolver is the one part replaced: no DNS server can be made to hang here."""
    real = socket.getaddrinfo
    release = threading.Event()

    def hanging(host: str, *args: object, **kwargs: object) -> object:
        if host == "upstream.example.test":
            release.wait(10)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        with pytest.raises(keepalive.DeadlineExceeded, match="resolving"):
            KeepAlivePool("upstream.example.test", 443, connect_timeout=5.0).send("GET", "/", {}, None, 0.3)
        assert time.monotonic() - started < 0.6
    finally:
        release.set()
