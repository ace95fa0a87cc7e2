"""A streamed proxy response, and the byte format API Gateway reads from a Lambda proxy integration in STREAM mode:
a JSON metadata object (statusCode, headers), eight NUL bytes, then the body as it is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DELIMITER = b"\x00" * 8
CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"


@dataclass
class StreamingResponse:
    status: int
    headers: dict[str, str]
    body: Iterator[bytes]

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def integration_stream(result: dict[str, Any] | StreamingResponse) -> Iterator[bytes]:
    """Any validator answer in the STREAM integration format: a buffered proxy response goes out as one piece."""
    if isinstance(result, StreamingResponse):
        yield _metadata(result.status, result.headers)
        try:
            yield from result.body
        finally:
            result.close()  # the reader went away: the body's own cleanup (settlement, audit) runs now
        return
    body = result.get("body") or ""
    yield _metadata(int(result.get("statusCode", 500)), dict(result.get("headers") or {}))
    yield body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _metadata(status: int, headers: dict[str, str]) -> bytes:
    return json.dumps({"statusCode": status, "headers": headers}, separators=(",", ":")).encode() + DELIMITER


def split_metadata(buffer: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(metadata, rest of the body) once the delimiter has arrived; None while it has not."""
    at = buffer.find(DELIMITER)
    if at < 0:
        return None
    meta = json.loads(buffer[:at])
    if not isinstance(meta, dict):
        raise ValueError("stream metadata is not an object")
    return meta, buffer[at + len(DELIMITER) :]
