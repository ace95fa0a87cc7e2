"""JSON over HTTP for the OpenAI-compatible, legacy and demo upstreams, on one keep-alive urllib3 pool per container.

Every wire problem becomes an `AttemptError` the guard understands; nothing here raises a client-visible error.
Neither the URL nor the body is ever logged (a URL may embed credentials).

One deadline per attempt: DNS (bounded on a helper thread, as in bulwark.aws.keepalive), connect, TLS and reading the
answer all spend the same budget. urllib3's own timeouts are per socket wait, so a peer that trickles a byte every
second would hold a call open forever; a watchdog shuts the attempt's socket down when the budget is spent. https
upstreams go through ``HTTPS_PROXY`` unless ``NO_PROXY`` names them, exactly as the AWS calls do (bulwark.aws.wire).
"""

from __future__ import annotations

import contextvars
import heapq
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3Timeout,
)

from bulwark.aws.keepalive import DeadlineExceeded, resolve
from bulwark.aws.wire import Endpoint, proxy_for
from bulwark.upstreams.guard import AttemptError, http_failure

logger = logging.getLogger(__name__)

READ_CHUNK = 65_536


class _Attempt:
    """One attempt's deadline; the watchdog shuts its sockets down when the deadline passes."""

    __slots__ = ("_lock", "_socks", "deadline", "done", "expired")

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.expired = False
        self.done = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        _WATCHDOG.watch(self)

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def end(self) -> None:
        with self._lock:
            self.done = True
            self._socks.clear()


class _Watchdog:
    """One thread per process for every attempt's deadline (a timer thread per call would cost ~0.3 ms each)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._wake = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt) -> None:
        with self._wake:
            self._seq += 1
            heapq.heappush(self._heap, (attempt.deadline, self._seq, attempt))
            if self._thread is None:  # started at the first call, not at import
                self._thread = threading.Thread(target=self._run, name="bulwark-upstream-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is attempt:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)  # ended in time: nothing to do
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                _, _, attempt = heapq.heappop(self._heap)
            attempt.expire()


_WATCHDOG = _Watchdog()


def _shut(sock: socket.socket) -> None:
    # shutdown (not close) wakes a thread blocked in recv on it; the pool then discards the connection.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("bulwark_upstream_attempt", default=None)


class _DeadlineMixin:
    """urllib3 connection hooks: resolve the name within the attempt's deadline, and hand each socket the attempt
    uses (new or pooled) to its watchdog."""

    _dns_host: str
    port: int
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        attempt = _ATTEMPT.get()
        if attempt is None:
            return super()._new_conn()  # type: ignore[misc, no-any-return]
        try:
            address = resolve(self._dns_host, self.port, attempt.deadline)[0][4][0]
        except DeadlineExceeded:
            raise Urllib3Timeout("name resolution exceeded the attempt's deadline") from None
        except OSError as exc:
            raise NewConnectionError(self, "name resolution failed") from exc  # type: ignore[arg-type]
        name, self._dns_host = self._dns_host, str(address)
        try:
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = name
        attempt.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = _ATTEMPT.get()
        if attempt is not None:
            attempt.watch(self.sock)  # a pooled connection; a new one is watched from _new_conn
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _with_deadlines(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


def new_pool() -> urllib3.PoolManager:
    # Retries and redirects are the guard's business (a redirect could leak the Authorization header elsewhere).
    return _with_deadlines(urllib3.PoolManager(num_pools=16, maxsize=16, retries=False, block=False))


def new_proxy_pool(host: str, port: int, authorization: str | None) -> urllib3.ProxyManager:
    """A pool that reaches https upstreams through an http:// proxy's CONNECT tunnel (TLS end to end)."""
    headers = {"Proxy-Authorization": authorization} if authorization else None
    manager = urllib3.ProxyManager(
        f"http://{host}:{port}", proxy_headers=headers, num_pools=16, maxsize=16, retries=False, block=False
    )
    return _with_deadlines(manager)  # type: ignore[return-value]


def _wire_failure(exc: BaseException) -> AttemptError:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
    if isinstance(exc, NewConnectionError):
        return AttemptError("connect_failed", retryable=True)
    if isinstance(exc, Urllib3Timeout):
        return AttemptError("timeout", retryable=True, timeout=True)
    if isinstance(exc, ProtocolError):
        return AttemptError("connection_reset", retryable=True)
    if isinstance(exc, SSLError):
        return AttemptError("tls_error", retryable=False)
    return AttemptError(f"transport_{type(exc).__name__}", retryable=True)


def _failure(exc: BaseException, attempt: _Attempt) -> AttemptError:
    # A socket the watchdog shut down surfaces as a reset or a protocol error: it is a timeout.
    if attempt.expired:
        return AttemptError("timeout", retryable=True, timeout=True)
    return _wire_failure(exc)


def _discard(resp: urllib3.BaseHTTPResponse) -> None:
    # Closing (not releasing) a half-read response keeps unread bytes from corrupting the next pooled request.
    resp.close()


class HttpTransport:
    def __init__(self, pool: urllib3.PoolManager | None = None) -> None:
        self._pool = pool or new_pool()
        self._proxies: dict[tuple[str, int, str | None], urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def _pool_for(self, url: str) -> urllib3.PoolManager:
        # The environment is read per call (as the proxy settings of the AWS calls are, per client), pools are kept.
        try:
            proxy = proxy_for(Endpoint.parse(url))
        except ValueError:
            raise AttemptError("proxy_misconfigured", retryable=False) from None
        if proxy is None:
            return self._pool
        with self._lock:
            if proxy not in self._proxies:
                self._proxies[proxy] = new_proxy_pool(*proxy)
            return self._proxies[proxy]

    def _open(
        self, url: str, body: Any, headers: Mapping[str, str], attempt: _Attempt, read_wait: float | None = None
    ) -> urllib3.BaseHTTPResponse:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        pool = self._pool_for(url)
        left = max(attempt.deadline - time.monotonic(), 0.001)
        token = _ATTEMPT.set(attempt)
        try:
            resp = pool.request(
                "POST",
                url,
                body=payload,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=left, read=read_wait or left),
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except HTTPError as exc:
            raise _failure(exc, attempt) from None
        finally:
            _ATTEMPT.reset(token)
        if not 200 <= resp.status < 300:
            failure = http_failure(resp.status, resp.headers.get("Retry-After"))
            _discard(resp)
            raise failure
        return resp

    @staticmethod
    def _check_length(resp: urllib3.BaseHTTPResponse, max_bytes: int) -> None:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            _discard(resp)
            raise AttemptError("response_too_large", retryable=False)

    def post_json(
        self, url: str, body: Any, headers: Mapping[str, str], *, timeout: float, max_bytes: int
    ) -> tuple[Any, Mapping[str, str]]:
        """POST JSON, read at most `max_bytes`, parse. The whole attempt (DNS, connect, TLS, every read) stays
        within `timeout`."""
        attempt = _Attempt(timeout)
        try:
            resp = self._open(url, body, headers, attempt)
            self._check_length(resp, max_bytes)
            parts: list[bytes] = []
            size = 0
            complete = False
            try:
                while True:
                    part = resp.read(READ_CHUNK)
                    if not part:
                        break
                    size += len(part)
                    if size > max_bytes:
                        raise AttemptError("response_too_large", retryable=False)
                    parts.append(part)
                if attempt.expired:  # the watchdog may have cut the body short, which can read as its end
                    raise AttemptError("timeout", retryable=True, timeout=True)
                complete = True
            except (HTTPError, OSError) as exc:
                raise _failure(exc, attempt) from None
            finally:
                resp.release_conn() if complete else _discard(resp)
        finally:
            attempt.end()
        try:
            return json.loads(b"".join(parts)), resp.headers
        except (ValueError, UnicodeDecodeError):
            raise AttemptError("malformed_json", retryable=False) from None

    def post_stream(
        self, url: str, body: Any, headers: Mapping[str, str], *, timeout: float, max_bytes: int
    ) -> Iterator[bytes]:
        """POST JSON and return the response body as it arrives (status checked before returning). The deadline
        covers DNS, connect, TLS and the answer's head; a stream's body then may take as long as the model writes,
        each wait bounded by `timeout`."""
        attempt = _Attempt(timeout)
        try:
            resp = self._open(url, body, headers, attempt, read_wait=timeout)
        finally:
            attempt.end()
        self._check_length(resp, max_bytes)
        return self._read_stream(resp, max_bytes)

    @staticmethod
    def _read_stream(resp: urllib3.BaseHTTPResponse, max_bytes: int) -> Iterator[bytes]:
        size = 0
        complete = False
        try:
            parts: Iterator[bytes]
            if getattr(resp, "chunked", False):
                parts = resp.read_chunked(decode_content=True)
            else:
                parts = iter(lambda: resp.read1(READ_CHUNK), b"")
            for part in parts:
                size += len(part)
                if size > max_bytes:
                    raise AttemptError("response_too_large", retryable=False)
                yield part
            complete = True
        except HTTPError as exc:
            raise _wire_failure(exc) from None
        finally:
            resp.release_conn() if complete else _discard(resp)
