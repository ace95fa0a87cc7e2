"""Bedrock runtime REST: `POST /model/{modelId}/converse` (JSON) and `/converse-stream` (AWS event stream)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from tests.integration.wire import eventstream
from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4

ANSWER = "Hello from Bedrock"


def error(code: str, status: int, headers: dict[str, str] | None = None) -> Reply:
    body = {"message": "arn:aws:bedrock:us-east-1:123456789012:internal detail"}
    return Reply.json(
        body, status, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", **(headers or {})}
    )


def converse_answer(request: dict[str, Any]) -> dict[str, Any]:
    tools = (request.get("toolConfig") or {}).get("tools") or []
    if tools:
        name = tools[0]["toolSpec"]["name"]
        content: list[dict[str, Any]] = [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": {"city": "Paris"}}},
        ]
        stop = "tool_use"
    else:
        content, stop = [{"text": ANSWER}], "end_turn"
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": 11, "outputTokens": 4, "totalTokens": 15},
        "metrics": {"latencyMs": 12},
    }


def stream_events(request: dict[str, Any]) -> list[bytes]:
    answer = converse_answer(request)
    events = [eventstream.event("messageStart", {"role": "assistant"})]
    for index, block in enumerate(answer["output"]["message"]["content"]):
        if "text" in block:
            for word in block["text"].split(" "):
                events.append(
                    eventstream.event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": word + " "}})
                )
        else:
            tool = block["toolUse"]
            start = {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}
            events.append(eventstream.event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            args = json.dumps(tool["input"])
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"toolUse": {"input": part}}
                events.append(eventstream.event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        events.append(eventstream.event("contentBlockStop", {"contentBlockIndex": index}))
    events.append(eventstream.event("messageStop", {"stopReason": answer["stopReason"]}))
    events.append(eventstream.event("metadata", {"usage": answer["usage"], "metrics": {"latencyMs": 12}}))
    return events


def stream_reply(events: list[bytes], chunk_delay: float = 0.0) -> Reply:
    return Reply(200, {"Content-Type": eventstream.CONTENT_TYPE}, chunks=events, chunk_delay=chunk_delay)


def model_id(request: Request) -> str:
    return unquote(request.path.split("/")[2])


def responder(request: Request) -> Reply:
    if not has_sigv4(request):
        return error("UnrecognizedClientException", 403)
    body = request.json()
    if request.path.endswith("/converse"):
        return Reply.json(converse_answer(body))
    if request.path.endswith("/converse-stream"):
        return stream_reply(stream_events(body))
    return error("UnknownOperationException", 404)


def start() -> WireServer:
    return WireServer(responder).start()
