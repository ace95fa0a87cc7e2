"""SageMaker runtime REST: `POST /endpoints/{EndpointName}/invocations`."""

from __future__ import annotations

from typing import Any

from bulwark_dev.local.demo_model import echo_answer
from tests.integration.wire import eventstream
from tests.integration.wire.openai import completion, sse, stream_chunks
from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4


def error(code: str, status: int, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Reply:
    body = {"Message": "Received server error from primary with message container-xyz.internal", **(extra or {})}
    return Reply.json(
        body, status, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", **(headers or {})}
    )


def payload_part(data: bytes) -> bytes:
    """One PayloadPart event: its `Bytes` member is the event payload (the container's own bytes)."""
    return eventstream.encode_message(
        {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}, data
    )


def stream_reply(request_body: dict[str, Any], chunk_delay: float = 0.0) -> Reply:
    """InvokeEndpointWithResponseStream from a messages-API container: OpenAI SSE, cut across PayloadPart events
    at arbitrary points (as containers flush), each event its own HTTP chunk."""
    text, prompt, completion_tokens = echo_answer(request_body)
    chunks = stream_chunks(text, prompt, completion_tokens, usage=True)
    raw = b"".join(sse(chunks))
    parts = [raw[i : i + 37] for i in range(0, len(raw), 37)]
    return Reply(
        200,
        {"Content-Type": eventstream.CONTENT_TYPE},
        chunks=[payload_part(p) for p in parts],
        chunk_delay=chunk_delay,
    )


def responder(request: Request) -> Reply:
    if not has_sigv4(request):
        return error("UnrecognizedClientException", 403)
    if request.path.startswith("/endpoints/") and request.path.endswith("/invocations-response-stream"):
        return stream_reply(request.json())
    if not (request.path.startswith("/endpoints/") and request.path.endswith("/invocations")):
        return error("UnknownOperationException", 404)
    body = request.json()
    if isinstance(body, dict) and "messages" in body:  # TGI / LMI messages API: OpenAI shape, with usage
        text, prompt, completion_tokens = echo_answer(body)
        return Reply.json(completion(text, prompt, completion_tokens))
    if isinstance(body, dict) and "inputs" in body:  # TGI generate: no usage
        return Reply.json([{"generated_text": f"Generated for: {body['inputs']}"}])
    return Reply.json({"prediction": [0.25, 0.75], "echo": body})


def start() -> WireServer:
    return WireServer(responder).start()
