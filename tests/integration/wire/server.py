"""A scriptable loopback HTTP/1.1 server: default responder per protocol, one-off replies for faults."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from bulwark_dev.local._http import QuietServer


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # the same port on two requests means the connection was kept alive

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Streamed bodies go out as HTTP chunks, one per item, flushed (with `chunk_delay` between them).
    chunks: Iterable[bytes] | None = None
    chunk_delay: float = 0.0
    delay: float = 0.0  # before the status line: a slow upstream
    drop: bool = False  # close the connection without answering: a reset

    @classmethod
    def json(cls, body: Any, status: int = 200, headers: dict[str, str] | None = None, *, delay: float = 0.0) -> Reply:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, data, delay=delay)


Responder = Callable[[Request], Reply]


class WireServer(QuietServer):
    # QuietServer: a client that hangs up (the fault tests do it on purpose) is no traceback.

    def __init__(self, responder: Responder) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responder = responder
        self.requests: list[Request] = []
        self._script: deque[Reply] = deque()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then go back to the default responder."""
        with self._lock:
            self._script.extend(replies)

    def reply_for(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        return self.responder(request)

    def shutdown_connections(self) -> None:
        """Close every open client connection from the server's side, as an idle timeout would."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> WireServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: WireServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server._lock:
            self.server._conns.add(self.connection)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, self.path, headers, body, int(self.client_address[1]))
        reply = self.server.reply_for(request)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunks is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for part in reply.chunks:
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = _handle  # noqa: N815 - the stdlib handler names
    do_POST = _handle  # noqa: N815


def unused_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def has_sigv4(request: Request) -> bool:
    return request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 Credential=")
