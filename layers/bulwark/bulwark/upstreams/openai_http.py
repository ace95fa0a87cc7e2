"""Any OpenAI-compatible HTTP upstream (vLLM, Ollama, a hosted API): `POST {url}/chat/completions`.

The answer is rebuilt from validated fields, not passed through: our id, the Bulwark model name, and only the message
fields a client expects, so upstream extras (ids, fingerprints, debug fields) never reach the client.
"""

import logging
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bulwark.policy import UpstreamConfig
from bulwark.upstreams import sse
from bulwark.upstreams.base import (
    ChatResult,
    ChatStream,
    JsonDict,
    TextTally,
    Usage,
    chunk,
    completion_body,
    estimate_chat_usage,
    new_completion_id,
    not_chat,
    not_invokable,
    usage_from_openai,
    without_stream_options,
)
from bulwark.upstreams.guard import AttemptError, Guard
from bulwark.upstreams.secrets import ApiKeyProvider
from bulwark.upstreams.transport import HttpTransport

logger = logging.getLogger(__name__)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class _Function(_Lenient):
    name: str
    arguments: str


class _ToolCall(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: _Function


class _Message(_Lenient):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(_Lenient):
    index: int = 0
    message: _Message
    finish_reason: str | None = None


class _Completion(_Lenient):
    choices: list[_Choice] = Field(min_length=1)
    usage: dict[str, Any] | None = None


class _DeltaFunction(_Lenient):
    name: str | None = None
    arguments: str | None = None


class _DeltaToolCall(_Lenient):
    index: int = 0
    id: str | None = None
    type: Literal["function"] | None = None
    function: _DeltaFunction | None = None


class _Delta(_Lenient):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_DeltaToolCall] | None = None


class _ChunkChoice(_Lenient):
    index: int = 0
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class _Chunk(_Lenient):
    choices: list[_ChunkChoice] = []
    usage: dict[str, Any] | None = None


def parse_openai_completion(model: str, request: JsonDict, raw: Any, *, upstream: str) -> ChatResult:
    """A ChatResult from an OpenAI chat.completion answer; AttemptError if it is not one."""
    try:
        completion = _Completion.model_validate(raw)
    except ValidationError:
        raise AttemptError("malformed_response", retryable=False) from None
    choice = completion.choices[0]
    message = choice.message.model_dump(exclude_none=True)
    message.setdefault("content", None)
    usage = usage_from_openai(completion.usage) or estimate_chat_usage(
        request, choice.message.content or "", upstream=upstream
    )
    return ChatResult(completion_body(model, message, choice.finish_reason or "stop", usage), usage)


class OpenAIHttpUpstream:
    def __init__(
        self, name: str, cfg: UpstreamConfig, *, guard: Guard, transport: HttpTransport, keys: ApiKeyProvider
    ) -> None:
        if not cfg.url:
            raise ValueError(f"model '{name}': upstream kind '{cfg.kind}' needs `url`")
        self.name = name
        self.cfg = cfg
        self.guard = guard
        self.transport = transport
        self.keys = keys
        self._url = cfg.url.rstrip("/") + "/chat/completions"

    def _headers(self, accept: str) -> dict[str, str]:
        # Built from scratch: the client's own credential and headers never travel upstream.
        headers = {"Content-Type": "application/json", "Accept": accept}
        key = self.keys.api_key(self.cfg)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, request: JsonDict, *, stream: bool) -> JsonDict:
        body = without_stream_options(request)
        body["model"] = self.cfg.model_id or self.name
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}  # we settle usage whether or not the client asked
        return body

    def _auth_failed(self, failure: AttemptError) -> None:
        if failure.status in (401, 403) and self.cfg.api_key_secret:
            self.keys.invalidate(self.cfg.api_key_secret)  # maybe rotated: read it afresh next time

    def chat(self, request: JsonDict, *, deadline: float) -> ChatResult:
        if not self.cfg.chat:
            raise not_chat()
        headers = self._headers("application/json")
        body = self._body(request, stream=False)

        def attempt(timeout: float) -> ChatResult:
            try:
                raw, _ = self.transport.post_json(
                    self._url, body, headers, timeout=timeout, max_bytes=self.cfg.max_response_bytes
                )
            except AttemptError as failure:
                self._auth_failed(failure)
                raise
            return parse_openai_completion(self.name, request, raw, upstream=self.name)

        return self.guard.call(attempt, deadline=deadline)

    def chat_stream(self, request: JsonDict, *, deadline: float) -> ChatStream:
        if not self.cfg.chat:
            raise not_chat()
        headers = self._headers("text/event-stream")
        body = self._body(request, stream=True)
        stream = ChatStream()

        def open_stream(timeout: float) -> Iterator[JsonDict]:
            try:
                raw = self.transport.post_stream(
                    self._url, body, headers, timeout=timeout, max_bytes=self.cfg.max_response_bytes
                )
            except AttemptError as failure:
                self._auth_failed(failure)
                raise
            return self._mapped(raw, request, stream)

        return stream.attach(self.guard.stream(open_stream, deadline=deadline))

    def _mapped(self, raw: Iterator[bytes], request: JsonDict, stream: ChatStream) -> Iterator[JsonDict]:
        return map_openai_sse(raw, request, stream, self.name)

    def invoke(self, body: JsonDict, *, deadline: float) -> tuple[JsonDict, Usage]:
        raise not_invokable()


def map_openai_sse(raw: Iterator[bytes], request: JsonDict, stream: ChatStream, name: str) -> Iterator[JsonDict]:
    """OpenAI SSE bytes (as they arrive) to Bulwark's chunks; the last one carries the usage (reported or estimated).
    Also what a SageMaker container speaking the messages API streams (bulwark.upstreams.sagemaker)."""
    cid, created = new_completion_id(), int(time.time())
    text = TextTally()  # for the estimate, without keeping the text: memory stays flat over a long stream
    usage: Usage | None = None
    try:
        for item in sse.decode_chunks(raw):
            if "error" in item:
                raise AttemptError("stream_error_event", retryable=False)
            parsed = _Chunk.model_validate(item)
            usage = usage_from_openai(parsed.usage) or usage
            for choice in parsed.choices[:1]:
                delta = choice.delta.model_dump(exclude_none=True)
                text.add(choice.delta.content or "")
                if delta or choice.finish_reason:
                    yield chunk(cid, created, name, delta, choice.finish_reason)
    except (ValueError, UnicodeDecodeError):  # ValidationError is a ValueError
        raise AttemptError("malformed_stream", retryable=False) from None
    for _ in raw:  # read past [DONE] to the end of the body, so the connection goes back to the pool
        pass
    stream.usage = usage or estimate_chat_usage(request, text, upstream=name)
    yield chunk(cid, created, name, None, usage=stream.usage)
