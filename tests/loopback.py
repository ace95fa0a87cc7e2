"""Loopback TCP servers the HTTP clients' tests share: a server that trickles its answer and an HTTP CONNECT proxy.

Raw sockets on purpose: they behave as no well-mannered HTTP server would (a byte every 50 ms, a tunnel refused), which
is what the clients' deadlines and proxy rules are tested against. Each binds a free port on 127.0.0.1.
"""

from __future__ import annotations

import select
import socket
import threading
import time


class LoopbackServer:
    """Accepts connections on a free loopback port, one thread per connection (`_serve`), until closed."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()


class TrickleServer(LoopbackServer):
    """Answers every request with `answer`, one byte every `gap` seconds (all at once when `gap` is 0), and keeps the
    connection for the next request: never silent long enough for a per-read timeout to fire, so only a whole-call
    deadline ends a call."""

    def __init__(self, answer: bytes, gap: float = 0.05) -> None:
        self.answer, self.gap = answer, gap
        super().__init__()

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
                    return  # the client gave up, as it should


class ConnectProxy(LoopbackServer):
    """An HTTP proxy that opens CONNECT tunnels (or refuses them with `status`), recording what it was asked."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.connects: list[tuple[str, str | None]] = []  # (target, Proxy-Authorization)
        self.request_lines: list[str] = []  # "CONNECT host:443 HTTP/1.0"
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        self.request_lines.append(lines[0])
        target = lines[0].split(" ")[1]
        fields = dict(line.split(": ", 1) for line in lines[1:])
        auth = fields.get("Proxy-Authorization")
        self.connects.append((target, auth))
        if self.status != 200:
            client.sendall(f"HTTP/1.1 {self.status} Refused\r\nContent-Length: 0\r\n\r\n".encode())
            client.close()
            return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pair = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(pair), [], [], 5)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()
