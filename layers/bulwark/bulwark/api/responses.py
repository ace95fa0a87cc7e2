"""Proxy responses in the contract's shape: JSON bodies, x-request-id everywhere, errors from the one error tree."""

from __future__ import annotations

import json
from typing import Any

from bulwark.errors import BulwarkError

JSON = "application/json"


def response(
    status: int, body: Any, *, request_id: str, headers: dict[str, str] | None = None, content_type: str = JSON
) -> dict[str, Any]:
    out_headers = {"Content-Type": content_type, "x-request-id": request_id, "Cache-Control": "no-store"}
    out_headers.update(headers or {})
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return {"statusCode": status, "headers": out_headers, "body": text, "isBase64Encoded": False}


def error_response(err: BulwarkError, *, request_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    merged = dict(headers or {})
    merged.update(err.headers)
    return response(err.status, err.to_body(), request_id=request_id, headers=merged)
