"""Small HTTP/1.1 pieces shared by the gateway emulator, the Lambda workers and the Lambda API router.

The standard library servers are enough for loopback traffic once two things are right: keep-alive (HTTP/1.1 with an
exact Content-Length) and one write per response with Nagle off, so a response never waits on a delayed ACK.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bulwark.aws.keepalive import KeepAlivePool

MAX_CHUNKED_BODY = 64 * 1024 * 1024


class BodyTooLarge(Exception):
    """The request body is larger than the caller's limit."""


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck keep-alive connection must not keep the process alive at exit
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a keep-alive connection reset, a reader gone mid-answer) is normal traffic, not a
        # fault of the stack: no traceback. Anything else is a bug and is printed as usual.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class FastHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        # Access logging is done by the emulator itself, in JSON, with the request id.
        return

    def read_body(self, limit: int) -> bytes:
        """Read the request body; raise BodyTooLarge (without reading it) when it is longer than ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise BodyTooLarge
        return self.rfile.read(length) if length else b""

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > min(limit, MAX_CHUNKED_BODY):
                raise BodyTooLarge
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def send_bytes(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes, *, close: bool = False, head: bool = False
    ) -> None:
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append(f"Content-Length: {len(body)}")
        lines.append(f"Date: {self.date_time_string()}")
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
        self.wfile.write(payload if head else payload + body)
        self.wfile.flush()


def serve_in_thread(server: QuietServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name=name)
    thread.start()
    return thread


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


class ConnectionPool:
    """Keep-alive connections to one loopback server, shared by the emulator's request threads."""

    def __init__(self, host: str, port: int, size: int = 32) -> None:
        self.host = host
        self.port = port
        self._pool = KeepAlivePool(host, port, connect_timeout=5.0, size=size)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Response:
        """Send one request; ``socket.timeout`` (TimeoutError) propagates when no answer comes within ``timeout``."""
        status, received, data = self._pool.send(method, path, headers, body, timeout)
        return Response(status, received.items(), data)

    def close(self) -> None:
        self._pool.close()
