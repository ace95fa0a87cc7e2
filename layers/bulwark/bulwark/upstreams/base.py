"""What every upstream adapter gives the invoker: an OpenAI-shaped answer and honest usage.

Adapters speak their upstream's wire protocol and translate to and from the canonical OpenAI chat format, so the invoker
(filtering, usage settling, SSE encoding) handles one shape only. Bodies handed back never carry the upstream's URL,
model ids or raw error text: `model` is always the Bulwark model name.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from bulwark.errors import InvalidRequest

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> JsonDict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class ChatResult:
    body: JsonDict  # an OpenAI chat.completion object; `model` is the Bulwark model name
    usage: Usage


class ChatStream(Iterator[JsonDict]):
    """Iterator of OpenAI chat.completion.chunk dicts; `usage` is set once the stream is exhausted.

    The last chunk yielded always carries `usage` (stream_options.include_usage semantics); the invoker drops it if the
    client did not ask. `usage.estimated` says whether the upstream reported it. Upstream failures before the first
    chunk are raised by `chat_stream` itself; later ones by iteration (as UpstreamError / UpstreamTimeout).
    """

    def __init__(self, chunks: Iterator[JsonDict] | None = None) -> None:
        self._chunks: Iterator[JsonDict] = chunks if chunks is not None else iter(())
        self.usage: Usage | None = None

    def attach(self, chunks: Iterator[JsonDict]) -> ChatStream:
        self._chunks = chunks
        return self

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> JsonDict:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early (client went away): releases the upstream connection."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class Upstream(Protocol):
    name: str

    def chat(self, request: JsonDict, *, deadline: float) -> ChatResult: ...

    def chat_stream(self, request: JsonDict, *, deadline: float) -> ChatStream: ...

    def invoke(self, body: JsonDict, *, deadline: float) -> tuple[JsonDict, Usage]: ...


def not_invokable() -> InvalidRequest:
    return InvalidRequest("This model does not accept generic invoke requests; use /v1/chat/completions.")


def not_chat() -> InvalidRequest:
    return InvalidRequest("This model does not speak chat; use POST /v1/models/{model}/invoke.", param="model")


# ---- token estimates --------------------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Rough token count when an upstream reports none: ~4 characters per token, never below the word count."""
    if not text:
        return 0
    return max(len(text.split()), (len(text) + 3) // 4)


def message_text(message: JsonDict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_text(request: JsonDict) -> str:
    return "\n".join(message_text(m) for m in request.get("messages", []) if isinstance(m, dict))


def estimate_chat_usage(request: JsonDict, completion_text: str | TextTally, *, upstream: str) -> Usage:
    logger.info("upstream reported no usage; estimated from text", extra={"upstream": upstream})
    completion = completion_text.tokens if isinstance(completion_text, TextTally) else estimate_tokens(completion_text)
    return Usage(estimate_tokens(prompt_text(request)), completion, estimated=True)


class TextTally:
    """estimate_tokens of a text that arrives in pieces, without keeping it: a stream's memory stays flat however
    long it runs. Counts characters and words (runs of non-whitespace, also across pieces)."""

    __slots__ = ("chars", "in_word", "words")

    def __init__(self) -> None:
        self.chars = 0
        self.words = 0
        self.in_word = False

    def add(self, text: str) -> None:
        if not text:
            return
        self.chars += len(text)
        parts = text.split()
        if not parts:
            self.in_word = False
            return
        joins = self.in_word and not text[0].isspace()  # the first word continues the previous piece's last one
        self.words += len(parts) - (1 if joins else 0)
        self.in_word = not text[-1].isspace()

    @property
    def tokens(self) -> int:
        if not self.chars:
            return 0
        return max(self.words, (self.chars + 3) // 4)


def usage_from_openai(raw: Any) -> Usage | None:
    """Usage from an OpenAI-style (prompt/completion) or Anthropic-style (input/output) usage object, if sane."""
    if not isinstance(raw, dict):
        return None
    for p_key, c_key in (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens")):
        p, c = raw.get(p_key), raw.get(c_key)
        if isinstance(p, int) and isinstance(c, int) and not isinstance(p, bool) and p >= 0 and c >= 0:
            return Usage(p, c, estimated=False)
    return None


# ---- OpenAI shapes ----------------------------------------------------------------------------------------------


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    model: str,
    message: JsonDict,
    finish_reason: str | None,
    usage: Usage,
    *,
    completion_id: str | None = None,
    created: int | None = None,
) -> JsonDict:
    return {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage.to_openai(),
    }


def chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: JsonDict | None,
    finish_reason: str | None = None,
    *,
    usage: Usage | None = None,
) -> JsonDict:
    body: JsonDict = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if delta is None:
        body["choices"] = []
    else:
        body["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    if usage is not None:
        body["usage"] = usage.to_openai()
    return body


def synthesize_stream(result: ChatResult) -> Iterator[JsonDict]:
    """Chunks for an upstream that cannot stream: role, content, tool calls, finish, then usage."""
    body = result.body
    cid, created, model = str(body["id"]), int(body["created"]), str(body["model"])
    choice = body["choices"][0]
    message: JsonDict = choice.get("message") or {}
    yield chunk(cid, created, model, {"role": "assistant", "content": ""})
    if message.get("content"):
        yield chunk(cid, created, model, {"content": message["content"]})
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield chunk(cid, created, model, {"tool_calls": calls})
    yield chunk(cid, created, model, {}, choice.get("finish_reason") or "stop")
    yield chunk(cid, created, model, None, usage=result.usage)


def synthesized_chat_stream(result: ChatResult) -> ChatStream:
    stream = ChatStream(synthesize_stream(result))
    stream.usage = result.usage
    return stream


def without_stream_options(request: JsonDict) -> JsonDict:
    """The request without its streaming options, for upstreams called without streaming."""
    return {k: v for k, v in request.items() if k not in ("stream", "stream_options")}


# ---- chat → JSON mapping for non-chat upstreams (SageMaker, legacy HTTP) -------------------------------------------

_TEMPLATE_VALUES: dict[str, Callable[[JsonDict], Any]] = {
    "$prompt": prompt_text,
    "$last_user_message": lambda r: next(
        (message_text(m) for m in reversed(r.get("messages", [])) if m.get("role") == "user"), ""
    ),
    "$messages": lambda r: r.get("messages", []),
    "$max_tokens": lambda r: r.get("max_completion_tokens", r.get("max_tokens")),
    "$temperature": lambda r: r.get("temperature"),
    "$top_p": lambda r: r.get("top_p"),
    "$stop": lambda r: r.get("stop"),
}


def apply_input_template(template: Any, request: JsonDict) -> Any:
    """Fill an operator's JSON template: a string value equal to a placeholder (e.g. "$prompt") becomes that value.

    Whole-value substitution, never string interpolation, so request text cannot change the JSON structure.
    Keys whose placeholder resolves to None are dropped (the upstream's default applies).
    """
    if isinstance(template, dict):
        out: JsonDict = {}
        for key, value in template.items():
            filled = apply_input_template(value, request)
            if filled is not None:
                out[key] = filled
        return out
    if isinstance(template, list):
        return [apply_input_template(v, request) for v in template]
    if isinstance(template, str) and template in _TEMPLATE_VALUES:
        return _TEMPLATE_VALUES[template](request)
    return template


def generated_text(response: Any) -> str:
    """The text of a non-chat JSON model answer in the common shapes (TGI, LMI, plain)."""
    if isinstance(response, list) and response:
        return generated_text(response[0])
    if isinstance(response, dict):
        for key in ("generated_text", "text", "output", "completion", "answer"):
            value = response.get(key)
            if isinstance(value, str):
                return value
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            text = choices[0].get("text")
            if isinstance(text, str):
                return text
    raise ValueError("no generated text in the upstream answer")
