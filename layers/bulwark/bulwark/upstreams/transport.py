"""JSON over HTTP for the OpenAI-compatible, legacy and demo upstreams, on one keep-alive urllib3 pool per container.

Every wire problem becomes an `AttemptError` the guard understands; nothing here raises a client-visible error.
Neither the URL nor the body is ever logged (a URL may embed credentials).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3Timeout,
)

from bulwark.upstreams.guard import AttemptError, http_failure

logger = logging.getLogger(__name__)

READ_CHUNK = 65_536


def new_pool() -> urllib3.PoolManager:
    # Retries and redirects are the guard's business (a redirect could leak the Authorization header elsewhere).
    return urllib3.PoolManager(num_pools=16, maxsize=16, retries=False, block=False)


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


def _discard(resp: urllib3.BaseHTTPResponse) -> None:
    # Closing (not releasing) a half-read response keeps unread bytes from corrupting the next pooled request.
    resp.close()


class HttpTransport:
    def __init__(self, pool: urllib3.PoolManager | None = None) -> None:
        self._pool = pool or new_pool()

    def _open(
        self, url: str, body: Any, headers: Mapping[str, str], timeout: float, max_bytes: int
    ) -> urllib3.BaseHTTPResponse:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            resp = self._pool.request(
                "POST",
                url,
                body=payload,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except HTTPError as exc:
            raise _wire_failure(exc) from None
        if not 200 <= resp.status < 300:
            failure = http_failure(resp.status, resp.headers.get("Retry-After"))
            _discard(resp)
            raise failure
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            _discard(resp)
            raise AttemptError("response_too_large", retryable=False)
        return resp

    def post_json(
        self, url: str, body: Any, headers: Mapping[str, str], *, timeout: float, max_bytes: int
    ) -> tuple[Any, Mapping[str, str]]:
        """POST JSON, read at most `max_bytes`, parse. The whole attempt (not just each read) stays within `timeout`."""
        attempt_deadline = time.monotonic() + timeout
        resp = self._open(url, body, headers, timeout, max_bytes)
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
                if time.monotonic() > attempt_deadline:
                    raise AttemptError("timeout", retryable=True, timeout=True)
                parts.append(part)
            complete = True
        except HTTPError as exc:
            raise _wire_failure(exc) from None
        finally:
            resp.release_conn() if complete else _discard(resp)
        try:
            return json.loads(b"".join(parts)), resp.headers
        except (ValueError, UnicodeDecodeError):
            raise AttemptError("malformed_json", retryable=False) from None

    def post_stream(
        self, url: str, body: Any, headers: Mapping[str, str], *, timeout: float, max_bytes: int
    ) -> Iterator[bytes]:
        """POST JSON and return the response body as it arrives (status checked before returning)."""
        resp = self._open(url, body, headers, timeout, max_bytes)
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
