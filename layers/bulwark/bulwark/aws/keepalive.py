"""Keep-alive HTTP/1.1 connections to one server, shared by the threads of a process.

Used by the lean AWS clients (bulwark.aws.wire) and by the local stack's own hops. Connections are reused LIFO (the
warmest first), Nagle is off (a request is one write), and a connection the server closed while idle is never sent
on: it is seen readable before reuse and replaced.

The HTTP/1.1 client is this module's own rather than ``http.client``: importing that (and the ``email`` package it
parses headers with) costs ~15 ms of every cold start, for requests whose shape is fixed. It is strict where
``http.client`` is lenient: header names and values with control characters are refused before anything is sent, and
an answer's status line, header count, line length and body size are bounded, so a broken or hostile peer gets an
``HttpProtocolError``, never a hang or unbounded memory.

Every call has one deadline: DNS, connect, the proxy tunnel, TLS, sending and reading together. Each socket wait is
bounded by what is left of it, so a peer that trickles bytes cannot stretch a call past its budget.
"""

from __future__ import annotations

import queue
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

MAX_LINE = 65_536  # bytes in a status, header or chunk-size line
MAX_HEADERS = 128
MAX_BODY = 32 * 1024 * 1024  # above Lambda's 6 MB synchronous payload and DynamoDB's 16 MB BatchGetItem


class HttpProtocolError(ConnectionError):
    """The peer's answer is not HTTP/1.x Bulwark accepts (malformed, truncated or over a limit); the connection is
    closed. A ConnectionError, so callers that handle a failed connection handle this too."""


class ServerClosed(ConnectionError):
    """The server closed the connection before answering (typically an idle keep-alive connection)."""


class ProxyRefused(ConnectionError):
    """The HTTPS proxy did not open a tunnel to the server (its status code is in the message)."""


# (host, port, Proxy-Authorization value or None) of an HTTP proxy that tunnels TLS with CONNECT.
Proxy = tuple[str, int, str | None]

# A pooled connection that turned out to be closed when used.
STALE = (ServerClosed, BrokenPipeError, ConnectionResetError)

_NO_BODY_STATUSES = frozenset({204, 304})
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FRAMING = frozenset({"content-length", "transfer-encoding"})  # this module frames the body itself


class DeadlineExceeded(TimeoutError):
    """The call's whole budget (DNS, connect, TLS, send and read together) is spent."""


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the call's deadline passed")
    return left


AddrInfo = list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int] | tuple[str, int, int, int]]]


def resolve(hostname: str, port: int, deadline: float) -> AddrInfo:
    """getaddrinfo within the deadline. The resolver has no timeout of its own (a dead DNS server holds it for the
    resolver's retries, tens of seconds), so a name runs on a helper thread that the call stops waiting for."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:  # an address literal needs no lookup
            socket.inet_pton(family, hostname)
        except OSError:
            continue
        return socket.getaddrinfo(hostname, port, family, socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)  # type: ignore[return-value]
    outcome: list[AddrInfo | OSError] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM))  # type: ignore[arg-type]
        except OSError as exc:
            outcome.append(exc)

    helper = threading.Thread(target=lookup, name="bulwark-dns", daemon=True)
    helper.start()
    helper.join(_left(deadline))
    if not outcome:
        raise DeadlineExceeded(f"resolving {hostname} took longer than the call's deadline")
    result = outcome[0]
    if isinstance(result, OSError):
        raise result
    return result


def connect(hostname: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first address of `hostname` that answers, DNS and connect within the deadline."""
    error: OSError = OSError(f"no address for {hostname}")
    for family, kind, proto, _name, address in resolve(hostname, port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(address)
            return sock
        except DeadlineExceeded:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def _checked(text: str, what: str) -> str:
    # CR or LF would let a value start a new header or request (header injection): refused, as http.client does.
    if _CONTROL.search(text):
        raise ValueError(f"invalid character in the {what}")
    return text


class Headers:
    """A response's header fields in order; ``get`` is case-insensitive and answers the first field of a name."""

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._index: dict[str, str] = {}
        for name, value in fields:
            self._index.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._index.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


class Connection:
    """One HTTP/1.1 connection: a request, then its answer, in turn. Not thread-safe (the pool hands it to one)."""

    __slots__ = ("_buf", "_deadline", "sock")

    def __init__(self, sock: socket.socket, deadline: float = float("inf")) -> None:
        self.sock = sock
        self._buf = bytearray()  # received, not yet consumed: non-empty between exchanges means the peer sent junk
        self._deadline = deadline  # of the call in progress (monotonic seconds)

    def _wait_at_most(self) -> None:
        # Each blocking socket operation gets only what is left of the call's budget, never a fresh timeout.
        self.sock.settimeout(None if self._deadline == float("inf") else _left(self._deadline))

    def _recv(self) -> bytes:
        self._wait_at_most()
        try:
            return self.sock.recv(65_536)
        except TimeoutError:
            raise DeadlineExceeded("the call's deadline passed while reading the answer") from None

    @classmethod
    def open(
        cls,
        hostname: str,
        port: int,
        *,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
        deadline: float | None = None,
    ) -> Connection:
        """Connect (through `proxy`'s CONNECT tunnel when given, TLS only), then TLS when `tls` is given: DNS,
        connect, tunnel and handshake together within `connect_timeout` and the call's `deadline`."""
        if proxy is not None and tls is None:
            raise ValueError("a proxy is used only to tunnel TLS")
        until = time.monotonic() + connect_timeout
        if deadline is not None:
            until = min(until, deadline)
        host, at = proxy[:2] if proxy else (hostname, port)
        sock = connect(host, at, until)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy is not None:
                cls(sock, until)._tunnel(hostname, port, proxy[2])
            if tls is not None:
                sock.settimeout(_left(until))
                sock = tls.wrap_socket(sock, server_hostname=hostname)  # certificate and host name verified
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def _tunnel(self, hostname: str, port: int, authorization: str | None) -> None:
        authority = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
        lines = [f"CONNECT {_checked(authority, 'proxy target')} HTTP/1.1", f"Host: {authority}"]
        if authorization:
            lines.append(f"Proxy-Authorization: {_checked(authorization, 'proxy credentials')}")
        self._wait_at_most()
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        _version, status = self._status_line()
        self._fields()
        if not 200 <= status < 300:
            raise ProxyRefused(f"the proxy answered {status} to CONNECT")
        if self._buf:  # in TLS the server speaks only after our hello: bytes here did not come from it
            raise HttpProtocolError("unexpected bytes after the proxy's answer")

    def idle_dropped(self) -> bool:
        """An idle connection that is readable (or holds unread bytes) was closed, or sent junk, by the server."""
        if self._buf:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.sock.close()

    def exchange(
        self, method: str, host: str, path: str, headers: dict[str, str], body: bytes | None, deadline: float
    ) -> tuple[int, Headers, bytes, bool]:
        """Send one request and read its answer: (status, headers, body, whether the connection must be closed),
        all of it before `deadline` (``time.monotonic()`` seconds) or ``DeadlineExceeded``."""
        self._deadline = deadline
        self._wait_at_most()
        self.sock.sendall(self._head(method, host, path, headers, body) + (body or b""))
        return self._answer(head_only=method == "HEAD")

    @staticmethod
    def _head(method: str, host: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
        if not path.startswith("/") or " " in path:
            raise ValueError("invalid request path")
        lines = [f"{_checked(method, 'method')} {_checked(path, 'request path')} HTTP/1.1"]
        names = {name.lower() for name in headers}
        if names & _FRAMING:
            raise ValueError("Content-Length and Transfer-Encoding are set by the connection")
        if "host" not in names:
            lines.append(f"Host: {host}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        for name, value in headers.items():
            if not name or ":" in name or " " in name:
                raise ValueError("invalid header name")
            lines.append(f"{_checked(name, 'header name')}: {_checked(str(value), 'header value')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # ---- reading -------------------------------------------------------------------------------------------------

    def _fill(self, at_start: bool = False) -> None:
        chunk = self._recv()
        if not chunk:
            if at_start:
                raise ServerClosed("the server closed the connection without answering")
            raise HttpProtocolError("the answer was cut short")
        self._buf += chunk

    def _line(self, at_start: bool = False) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                if end > MAX_LINE:
                    raise HttpProtocolError("line too long")
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line.rstrip(b"\r\n")
            if len(self._buf) > MAX_LINE:
                raise HttpProtocolError("line too long")
            self._fill(at_start=at_start and not self._buf)

    def _exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _answer(self, *, head_only: bool) -> tuple[int, Headers, bytes, bool]:
        while True:
            version, status = self._status_line()
            fields = self._fields()
            if status >= 200 or status == 101:
                break  # an interim answer (100 Continue, 103 Early Hints) is followed by the real one
        headers = Headers(fields)
        connection = (headers.get("connection") or "").lower()
        will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if head_only or status in _NO_BODY_STATUSES or status < 200:
            return status, headers, b"", will_close
        encoding = (headers.get("transfer-encoding") or "").lower()
        if encoding:
            if encoding != "chunked":
                raise HttpProtocolError("unsupported transfer encoding")
            return status, headers, self._chunked(), will_close
        lengths = {value.strip() for name, value in fields if name.lower() == "content-length"}
        if len(lengths) > 1:
            raise HttpProtocolError("conflicting Content-Length")
        if lengths:
            (length,) = lengths
            if not length.isdigit() or int(length) > MAX_BODY:
                raise HttpProtocolError("bad or excessive Content-Length")
            return status, headers, self._exact(int(length)), will_close
        return status, headers, self._until_close(), True

    def _status_line(self) -> tuple[str, int]:
        line = self._line(at_start=True)
        parts = line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise HttpProtocolError("bad status line")
        status = int(parts[1])
        if not 100 <= status <= 599 or len(parts[1]) != 3:
            raise HttpProtocolError("bad status code")
        return parts[0].decode("ascii"), status

    def _fields(self) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        while True:
            line = self._line()
            if not line:
                return fields
            if len(fields) >= MAX_HEADERS:
                raise HttpProtocolError("too many header fields")
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                raise HttpProtocolError("malformed header field")  # includes obsolete line folding
            fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError("bad chunk size") from None
            if size < 0 or not size_text.isalnum():
                raise HttpProtocolError("bad chunk size")
            if size == 0:
                self._fields()  # trailer fields, ignored
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise HttpProtocolError("answer too large")
            parts.append(self._exact(size))
            if self._exact(2) != b"\r\n":
                raise HttpProtocolError("bad chunk terminator")

    def _until_close(self) -> bytes:
        while len(self._buf) <= MAX_BODY:
            chunk = self._recv()
            if not chunk:
                data = bytes(self._buf)
                self._buf.clear()
                return data
            self._buf += chunk
        raise HttpProtocolError("answer too large")


class KeepAlivePool:
    def __init__(
        self,
        hostname: str,
        port: int,
        *,
        tls: Callable[[], ssl.SSLContext] | None = None,
        connect_timeout: float = 1.0,
        resend_on_stale: bool = True,
        size: int = 16,
        proxy: Proxy | None = None,
    ) -> None:
        self._hostname = hostname
        self._port = port
        default_port = 443 if tls is not None else 80
        self._host_header = hostname if port == default_port else f"{hostname}:{port}"
        if ":" in hostname and not hostname.startswith("["):  # an IPv6 literal
            self._host_header = f"[{hostname}]" if port == default_port else f"[{hostname}]:{port}"
        self._tls = tls  # makes the TLS context, called at the first connection
        self._proxy = proxy
        self._connect_timeout = connect_timeout
        self._resend_on_stale = resend_on_stale
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue(maxsize=size)

    def _new(self, deadline: float) -> Connection:
        return Connection.open(
            self._hostname,
            self._port,
            connect_timeout=self._connect_timeout,
            tls=self._tls() if self._tls is not None else None,
            proxy=self._proxy,
            deadline=deadline,
        )

    def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, Headers, bytes]:
        """One request; (status, headers, body). `timeout` is the whole call's budget: DNS, connect (also capped by
        the pool's connect timeout), TLS, sending and reading the answer together, including a resend on a stale
        connection. Socket errors, ``TimeoutError`` (``DeadlineExceeded`` when the budget ran out), ``ServerClosed``
        and ``HttpProtocolError`` propagate; ``ValueError`` for a request that cannot be sent as given."""
        deadline = time.monotonic() + timeout
        for attempt in range(2):
            try:
                conn, reused = self._idle.get_nowait(), True
                if conn.idle_dropped():  # the server closed it while idle: never send on it
                    conn.close()
                    conn, reused = self._new(deadline), False
            except queue.Empty:
                conn, reused = self._new(deadline), False
            try:
                status, received, data, will_close = conn.exchange(
                    method, self._host_header, path, headers, body, deadline
                )
            except STALE:
                conn.close()
                # Closed under us (a race with the check above). Resent only where a repeat is harmless: the caller
                # says so (never for a Lambda Invoke, which may already be calling a model).
                if reused and attempt == 0 and self._resend_on_stale:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if will_close:
                conn.close()
            else:
                try:
                    self._idle.put_nowait(conn)
                except queue.Full:
                    conn.close()
            return status, received, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
