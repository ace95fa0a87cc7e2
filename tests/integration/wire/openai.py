"""OpenAI Chat Completions over HTTP: `POST /v1/chat/completions`, plain JSON or server-sent events."""

from __future__ import annotations

import json
import time
from typing import Any

from bulwark_dev.local.demo_model import echo_answer
from tests.integration.wire.server import Reply, Request, WireServer


def completion(text: str, prompt: int, completion_tokens: int, *, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-upstream-internal-id",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "internal-model-v7",
        "system_fingerprint": "fp_internal",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": 0}
    return body


def sse(events: list[Any], *, done: bool = True) -> list[bytes]:
    out = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


def stream_chunks(text: str, prompt: int, completion_tokens: int, *, usage: bool) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1, "model": "internal-model-v7"}

    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    chunks = [delta({"role": "assistant", "content": ""})]
    chunks += [delta({"content": w}) for w in text.split(" ") if w]
    chunks.append(delta({}, "stop"))
    if usage:
        chunks.append(
            {**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens}}
        )
    return chunks


def error(status: int, headers: dict[str, str] | None = None) -> Reply:
    # Raw upstream text with internals, to show it never reaches the client.
    body = {"error": {"message": "backend pod gpu-7.internal.example exploded", "type": "server_error"}}
    return Reply.json(body, status, headers)


def responder(request: Request) -> Reply:
    if request.method != "POST" or request.path != "/v1/chat/completions":
        return Reply.json({"error": {"message": "not found"}}, 404)
    body = request.json()
    text, prompt, completion_tokens = echo_answer(body)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = stream_chunks(text, prompt, completion_tokens, usage=include_usage)
        return Reply(200, {"Content-Type": "text/event-stream"}, chunks=sse(chunks))
    return Reply.json(completion(text, prompt, completion_tokens))


def start() -> WireServer:
    return WireServer(responder).start()
