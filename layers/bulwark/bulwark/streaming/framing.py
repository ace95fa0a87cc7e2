"""What the client receives on a stream: OpenAI chat.completion.chunk events, the usage chunk that
`stream_options.include_usage` asks for, an error event in OpenAI's shape, and `data: [DONE]`."""

from __future__ import annotations

from typing import Any

from bulwark.errors import BulwarkError
from bulwark.upstreams.sse import DONE_EVENT, encode_event

__all__ = ["DONE_EVENT", "chunk_event", "error_event", "usage_event"]


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
