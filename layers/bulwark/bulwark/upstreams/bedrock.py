"""Amazon Bedrock through the Converse and ConverseStream APIs, mapped to and from OpenAI chat, both ways.

Requests: system/developer messages → `system`; user/assistant text → text blocks; assistant tool_calls → toolUse;
tool messages → toolResult blocks in a user turn; consecutive same-role turns merged (Converse requires alternation);
max_tokens/temperature/top_p/stop → inferenceConfig; tools/tool_choice → toolConfig.
Answers: text → content, toolUse → tool_calls, stopReason → finish_reason, usage from inputTokens/outputTokens.
"""

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bulwark.errors import InvalidRequest
from bulwark.policy import UpstreamConfig
from bulwark.upstreams.aws import aws_failure, botocore_errors, content_length
from bulwark.upstreams.base import (
    ChatResult,
    ChatStream,
    JsonDict,
    TextTally,
    Usage,
    chunk,
    completion_body,
    estimate_chat_usage,
    message_text,
    new_completion_id,
    not_invokable,
)
from bulwark.upstreams.guard import AttemptError, Guard

logger = logging.getLogger(__name__)

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}

BedrockClientFactory = Callable[[float], Any]


# ---- OpenAI → Converse --------------------------------------------------------------------------------------------


def _text_blocks(message: JsonDict) -> list[JsonDict]:
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") not in ("text", None):
                raise InvalidRequest("Only text content is supported for this model.", param="messages")
    text = message_text(message)
    return [{"text": text}] if text else []


def _tool_use(call: JsonDict) -> JsonDict:
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        raise InvalidRequest("Tool call arguments must be a JSON object.", param="messages") from None
    if not isinstance(arguments, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", param="messages")
    return {
        "toolUse": {"toolUseId": str(call.get("id", "")), "name": str(function.get("name", "")), "input": arguments}
    }


def to_converse(request: JsonDict, model_id: str) -> JsonDict:
    """Converse request parameters (modelId, messages, system, inferenceConfig, toolConfig) for an OpenAI request."""
    system: list[JsonDict] = []
    turns: list[JsonDict] = []

    def add(role: str, blocks: list[JsonDict]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for message in request.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message))
        elif role == "user":
            add("user", _text_blocks(message))
        elif role == "assistant":
            blocks = _text_blocks(message)
            blocks.extend(_tool_use(call) for call in message.get("tool_calls") or [])
            add("assistant", blocks)
        elif role == "tool":
            result = {"toolUseId": str(message.get("tool_call_id", "")), "content": [{"text": message_text(message)}]}
            add("user", [{"toolResult": result}])

    params: JsonDict = {"modelId": model_id, "messages": turns}
    if system:
        params["system"] = system
    inference: JsonDict = {}
    max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    if request.get("temperature") is not None:
        inference["temperature"] = request["temperature"]
    if request.get("top_p") is not None:
        inference["topP"] = request["top_p"]
    stop = request.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        params["inferenceConfig"] = inference
    tool_config = _tool_config(request)
    if tool_config:
        params["toolConfig"] = tool_config
    return params


def _tool_config(request: JsonDict) -> JsonDict | None:
    tools = request.get("tools") or []
    if not tools:
        return None
    specs = []
    for tool in tools:
        function = tool.get("function") or {}
        spec: JsonDict = {
            "name": function.get("name"),
            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: JsonDict = {"tools": specs}
    choice = request.get("tool_choice")
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    return config


# ---- Converse → OpenAI --------------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class _ToolUse(_Lenient):
    toolUseId: str  # noqa: N815 - the wire name
    name: str
    input: Any = None


class _Block(_Lenient):
    text: str | None = None
    toolUse: _ToolUse | None = None  # noqa: N815


class _OutMessage(_Lenient):
    role: str = "assistant"
    content: list[_Block] = []


class _Output(_Lenient):
    message: _OutMessage


class _TokenUsage(_Lenient):
    inputTokens: int = Field(ge=0)  # noqa: N815
    outputTokens: int = Field(ge=0)  # noqa: N815


class _ConverseResponse(_Lenient):
    output: _Output
    stopReason: str  # noqa: N815
    usage: _TokenUsage | None = None


def from_converse(model: str, request: JsonDict, raw: Any, *, upstream: str) -> ChatResult:
    """A ChatResult from a Converse response; AttemptError if the answer is not one."""
    try:
        response = _ConverseResponse.model_validate(raw)
    except ValidationError:
        raise AttemptError("malformed_response", retryable=False) from None
    texts = [block.text for block in response.output.message.content if block.text is not None]
    calls = [
        {
            "id": block.toolUse.toolUseId,
            "type": "function",
            "function": {"name": block.toolUse.name, "arguments": json.dumps(block.toolUse.input or {})},
        }
        for block in response.output.message.content
        if block.toolUse is not None
    ]
    message: JsonDict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if response.usage is not None:
        usage = Usage(response.usage.inputTokens, response.usage.outputTokens, estimated=False)
    else:
        usage = estimate_chat_usage(request, "".join(texts), upstream=upstream)
    finish = STOP_REASONS.get(response.stopReason, "stop")
    return ChatResult(completion_body(model, message, finish, usage), usage)


class BedrockUpstream:
    def __init__(self, name: str, cfg: UpstreamConfig, *, guard: Guard, client: BedrockClientFactory) -> None:
        if not cfg.model_id:
            raise ValueError(f"model '{name}': upstream kind 'bedrock' needs `model_id`")
        self.name = name
        self.cfg = cfg
        self.guard = guard
        self._client = client  # timeout → bedrock-runtime client with that read timeout
        self._model_id = cfg.model_id

    def chat(self, request: JsonDict, *, deadline: float) -> ChatResult:
        params = to_converse(request, self._model_id)

        def attempt(timeout: float) -> ChatResult:
            try:
                raw = self._client(timeout).converse(**params)
            except botocore_errors() as exc:
                raise aws_failure(exc) from None
            size = content_length(raw)
            if size is not None and size > self.cfg.max_response_bytes:
                raise AttemptError("response_too_large", retryable=False)
            return from_converse(self.name, request, raw, upstream=self.name)

        return self.guard.call(attempt, deadline=deadline)

    def chat_stream(self, request: JsonDict, *, deadline: float) -> ChatStream:
        params = to_converse(request, self._model_id)
        stream = ChatStream()

        def open_stream(timeout: float) -> Iterator[JsonDict]:
            try:
                raw = self._client(timeout).converse_stream(**params)
            except botocore_errors() as exc:
                raise aws_failure(exc) from None
            return self._mapped(raw["stream"], request, stream)

        return stream.attach(self.guard.stream(open_stream, deadline=deadline))

    def _mapped(self, events: Any, request: JsonDict, stream: ChatStream) -> Iterator[JsonDict]:
        cid, created, model = new_completion_id(), int(time.time()), self.name
        tool_index: dict[int, int] = {}  # Converse content block index → OpenAI tool_calls index
        text = TextTally()  # for the estimate, without keeping the text: memory stays flat over a long stream
        usage: Usage | None = None
        size = 0
        try:
            for event in events:
                size += len(json.dumps(event, default=str))  # the body size is not visible through botocore
                if size > self.cfg.max_response_bytes:
                    raise AttemptError("response_too_large", retryable=False)
                out = self._event_chunk(event, tool_index, text)
                if out is not None:
                    yield chunk(cid, created, model, *out)
                metadata = event.get("metadata")
                if metadata and metadata.get("usage"):
                    u = metadata["usage"]
                    usage = Usage(int(u.get("inputTokens", 0)), int(u.get("outputTokens", 0)), estimated=False)
        except botocore_errors() as exc:
            raise aws_failure(exc) from None
        except (TypeError, ValueError, AttributeError):
            raise AttemptError("malformed_stream", retryable=False) from None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        stream.usage = usage or estimate_chat_usage(request, text, upstream=self.name)
        yield chunk(cid, created, model, None, usage=stream.usage)

    @staticmethod
    def _event_chunk(
        event: JsonDict, tool_index: dict[int, int], text: TextTally
    ) -> tuple[JsonDict, str | None] | None:
        if "messageStart" in event:
            return {"role": "assistant", "content": ""}, None
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = (start.get("start") or {}).get("toolUse")
            if tool:
                index = tool_index.setdefault(int(start.get("contentBlockIndex", 0)), len(tool_index))
                call = {"index": index, "id": tool["toolUseId"], "type": "function"}
                call["function"] = {"name": tool["name"], "arguments": ""}
                return {"tool_calls": [call]}, None
            return None
        if "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta") or {}
            if "text" in delta:
                text.add(delta["text"])
                return {"content": delta["text"]}, None
            if "toolUse" in delta:
                index = tool_index.setdefault(int(block.get("contentBlockIndex", 0)), len(tool_index))
                args = delta["toolUse"].get("input", "")
                return {"tool_calls": [{"index": index, "function": {"arguments": args}}]}, None
            return None
        if "messageStop" in event:
            return {}, STOP_REASONS.get(event["messageStop"].get("stopReason", ""), "stop")
        return None

    def invoke(self, body: JsonDict, *, deadline: float) -> tuple[JsonDict, Usage]:
        raise not_invokable()
