"""Amazon SageMaker real-time endpoints (InvokeEndpoint, application/json; InvokeEndpointWithResponseStream).

`invoke` passes the validated body through. For chat, an endpoint that speaks the OpenAI messages API (TGI, LMI) gets
the request as is; with an `input_template` the request is mapped onto the endpoint's own JSON instead. Usage comes
from the answer when it has one, otherwise it is estimated (and the log says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from bulwark.policy import UpstreamConfig
from bulwark.upstreams.aws import aws_failure, botocore_errors
from bulwark.upstreams.base import (
    ChatResult,
    ChatStream,
    JsonDict,
    Usage,
    not_chat,
    synthesized_chat_stream,
)
from bulwark.upstreams.guard import AttemptError, Guard
from bulwark.upstreams.legacy_http import chat_from_json_answer, invoke_result, json_chat_body

logger = logging.getLogger(__name__)

SageMakerClientFactory = Callable[[float], Any]


class SageMakerUpstream:
    def __init__(self, name: str, cfg: UpstreamConfig, *, guard: Guard, client: SageMakerClientFactory) -> None:
        if not cfg.endpoint_name:
            raise ValueError(f"model '{name}': upstream kind 'sagemaker' needs `endpoint_name`")
        self.name = name
        self.cfg = cfg
        self.guard = guard
        self._client = client
        self._endpoint = cfg.endpoint_name

    def _invoke_json(self, body: Any, timeout: float) -> Any:
        try:
            response = self._client(timeout).invoke_endpoint(
                EndpointName=self._endpoint,
                Body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                ContentType="application/json",
                Accept="application/json",
            )
            stream = response["Body"]
            try:
                raw = stream.read(self.cfg.max_response_bytes + 1)  # never buffer more than the cap
            finally:
                stream.close()
        except botocore_errors() as exc:
            raise aws_failure(exc) from None
        if len(raw) > self.cfg.max_response_bytes:
            raise AttemptError("response_too_large", retryable=False)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise AttemptError("malformed_json", retryable=False) from None

    def chat(self, request: JsonDict, *, deadline: float) -> ChatResult:
        if not self.cfg.chat:
            raise not_chat()
        body = json_chat_body(self.cfg, request)

        def attempt(timeout: float) -> ChatResult:
            return chat_from_json_answer(self.name, request, self._invoke_json(body, timeout), upstream=self.name)

        return self.guard.call(attempt, deadline=deadline)

    def chat_stream(self, request: JsonDict, *, deadline: float) -> ChatStream:
        """InvokeEndpointWithResponseStream when the endpoint takes the chat request as it is (a TGI / LMI messages
        API container, which streams OpenAI SSE in its PayloadPart events). A templated body means a container
        whose stream format Bulwark does not know: one call, re-chunked."""
        if not self.cfg.chat:
            raise not_chat()
        if self.cfg.input_template is not None:
            return synthesized_chat_stream(self.chat(request, deadline=deadline))
        from bulwark.upstreams.openai_http import map_openai_sse

        body = {**json_chat_body(self.cfg, request), "stream": True, "stream_options": {"include_usage": True}}
        stream = ChatStream()

        def open_stream(timeout: float) -> Iterator[JsonDict]:
            try:
                response = self._client(timeout).invoke_endpoint_with_response_stream(
                    EndpointName=self._endpoint,
                    Body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                    ContentType="application/json",
                    Accept="text/event-stream",
                )
            except botocore_errors() as exc:
                raise aws_failure(exc) from None
            return map_openai_sse(self._payload_parts(response["Body"]), request, stream, self.name)

        return stream.attach(self.guard.stream(open_stream, deadline=deadline))

    def _payload_parts(self, events: Any) -> Iterator[bytes]:
        """The bytes of each PayloadPart event, as they arrive; an error event or a broken stream is an AttemptError."""
        size = 0
        try:
            for event in events:
                part = (event.get("PayloadPart") or {}).get("Bytes")
                if part is None:  # ModelStreamError / InternalStreamFailure (botocore raises most of them itself)
                    raise AttemptError("model_stream_error", retryable=False)
                size += len(part)
                if size > self.cfg.max_response_bytes:
                    raise AttemptError("response_too_large", retryable=False)
                yield part
        except botocore_errors() as exc:
            raise aws_failure(exc) from None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def invoke(self, body: JsonDict, *, deadline: float) -> tuple[JsonDict, Usage]:
        raw = self.guard.call(lambda timeout: self._invoke_json(body, timeout), deadline=deadline)
        return invoke_result(raw, body, upstream=self.name)
