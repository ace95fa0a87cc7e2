"""Keep-alive HTTP/1.1 connections to one server, shared by the threads of a process (http.client underneath).

Used by the lean AWS clients (bulwark.aws_wire) and by the local stack's own hops. Connections are reused LIFO (the
warmest first), Nagle is off (a request is one write), and a connection the server closed while idle is never sent
on: it is seen readable before reuse and replaced.
"""

from __future__ import annotations

import http.client
import queue
import select
import socket
import ssl

# A pooled connection that turned out to be closed when used.
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection that is readable has been closed (or sent junk) by the server."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class KeepAlivePool:
    def __init__(
        self,
        hostname: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float = 1.0,
        resend_on_stale: bool = True,
        size: int = 16,
    ) -> None:
        self._hostname = hostname
        self._port = port
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._resend_on_stale = resend_on_stale
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(maxsize=size)

    def _new(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._hostname, self._port, timeout=self._connect_timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._hostname, self._port, timeout=self._connect_timeout)

    def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None, read_timeout: float
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request; (status, headers, body). Socket errors and ``TimeoutError`` propagate."""
        for attempt in range(2):
            try:
                conn, reused = self._idle.get_nowait(), True
                if _dropped(conn):  # the server closed it while idle: never send on it
                    conn.close()
                    conn, reused = self._new(), False
            except queue.Empty:
                conn, reused = self._new(), False
            try:
                if conn.sock is None:
                    conn.connect()
                    assert conn.sock is not None
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.sock.settimeout(read_timeout)
                conn.request(method, path, body=body, headers=headers)
                raw = conn.getresponse()
                data = raw.read()
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
            if raw.will_close:
                conn.close()
            else:
                try:
                    self._idle.put_nowait(conn)
                except queue.Full:
                    conn.close()
            return raw.status, raw.msg, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
