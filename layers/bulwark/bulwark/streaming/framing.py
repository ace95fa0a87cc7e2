"""What the client receives on a stream: OpenAI chat.completion.chunk events, the usage chunk that
`stream_options.include_usage` asks for, an error event in OpenAI's shape, and `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from bulwark.errors import BulwarkError

DONE_EVENT = b"data: [DONE]\n\n"


def encode_event(data: Any) -> bytes:
    """One SSE event carrying `data` as compact JSON (JSON never contains a raw newline, so one `data:` line)."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def encode_stream(chunks: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for item in chunks:
        yield encode_event(item)
    yield DONE_EVENT


def chunk_event(chunk: dict[str, Any], choices: list[dict[str, Any]], *, include_usage: bool) -> bytes:
    out = {k: v for k, v in chunk.items() if k not in ("usage", "choices")}
    out["choices"] = choices
    if include_usage:
        out["usage"] = None  # as OpenAI: every chunk has the field, only the last one fills it
    return encode_event(out)


def usage_event(*, chunk_id: str, created: int, model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    return encode_event(
        {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def error_event(err: BulwarkError) -> bytes:
    """The contract's error body as one event: the OpenAI SDKs raise APIError on a data payload with `error`."""
    return encode_event(err.to_body())
