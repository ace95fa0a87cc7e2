"""SageMaker runtime REST: `POST /endpoints/{EndpointName}/invocations`."""

from __future__ import annotations

from typing import Any

from bulwark_dev.local.demo_model import echo_answer
from tests.integration.wire.openai import completion
from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4


def error(code: str, status: int, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Reply:
    body = {"Message": "Received server error from primary with message container-xyz.internal", **(extra or {})}
    return Reply.json(
        body, status, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", **(headers or {})}
    )


def responder(request: Request) -> Reply:
    if not has_sigv4(request):
        return error("UnrecognizedClientException", 403)
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
