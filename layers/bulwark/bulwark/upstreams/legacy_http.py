"""A plain HTTP JSON model service (`kind: http`): Bulwark in front of an existing system, without changing it.

`invoke` POSTs the validated body to `url` and returns the JSON answer. For chat, the policy's `input_template` maps
the chat request onto the service's JSON (see base.apply_input_template); without one the OpenAI request is sent as is.
The answer may be an OpenAI chat.completion or a plain JSON with generated text (TGI, LMI and similar shapes).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bulwark.policy import UpstreamConfig
from bulwark.upstreams.base import (
    ChatResult,
    ChatStream,
    JsonDict,
    Usage,
    apply_input_template,
    completion_body,
    estimate_chat_usage,
    estimate_tokens,
    generated_text,
    not_chat,
    synthesized_chat_stream,
    usage_from_openai,
    without_stream_options,
)
from bulwark.upstreams.guard import AttemptError, Guard
from bulwark.upstreams.openai_http import parse_openai_completion
from bulwark.upstreams.secrets import ApiKeyProvider
from bulwark.upstreams.transport import HttpTransport

logger = logging.getLogger(__name__)


def json_chat_body(cfg: UpstreamConfig, request: JsonDict) -> Any:
    if cfg.input_template is not None:
        return apply_input_template(cfg.input_template, request)
    body = without_stream_options(request)
    if cfg.model_id:
        body["model"] = cfg.model_id
    else:
        body.pop("model", None)  # the Bulwark name means nothing to the upstream
    return body


def chat_from_json_answer(model: str, request: JsonDict, raw: Any, *, upstream: str) -> ChatResult:
    """A ChatResult from a JSON model's answer: an OpenAI completion, or generated text in a common shape."""
    if isinstance(raw, dict) and isinstance(raw.get("choices"), list) and raw["choices"]:
        first = raw["choices"][0]
        if isinstance(first, dict) and "message" in first:
            return parse_openai_completion(model, request, raw, upstream=upstream)
    try:
        text = generated_text(raw)
    except ValueError:
        raise AttemptError("unrecognized_response", retryable=False) from None
    reported = usage_from_openai(raw.get("usage")) if isinstance(raw, dict) else None
    usage = reported or estimate_chat_usage(request, text, upstream=upstream)
    return ChatResult(completion_body(model, {"role": "assistant", "content": text}, "stop", usage), usage)


def invoke_result(raw: Any, body: JsonDict, *, upstream: str) -> tuple[JsonDict, Usage]:
    answer: JsonDict = raw if isinstance(raw, dict) else {"output": raw}
    usage = usage_from_openai(answer.get("usage"))
    if usage is None:
        logger.info("upstream reported no usage; estimated from JSON size", extra={"upstream": upstream})
        usage = Usage(
            estimate_tokens(json.dumps(body, ensure_ascii=False)),
            estimate_tokens(json.dumps(answer, ensure_ascii=False)),
            estimated=True,
        )
    return answer, usage


class LegacyHttpUpstream:
    def __init__(
        self, name: str, cfg: UpstreamConfig, *, guard: Guard, transport: HttpTransport, keys: ApiKeyProvider
    ) -> None:
        if not cfg.url:
            raise ValueError(f"model '{name}': upstream kind 'http' needs `url`")
        self.name = name
        self.cfg = cfg
        self.guard = guard
        self.transport = transport
        self.keys = keys
        self._url = cfg.url

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.keys.api_key(self.cfg)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, body: Any, *, deadline: float) -> Any:
        headers = self._headers()

        def attempt(timeout: float) -> Any:
            raw, _ = self.transport.post_json(
                self._url, body, headers, timeout=timeout, max_bytes=self.cfg.max_response_bytes
            )
            return raw

        return self.guard.call(attempt, deadline=deadline)

    def chat(self, request: JsonDict, *, deadline: float) -> ChatResult:
        if not self.cfg.chat:
            raise not_chat()
        body = json_chat_body(self.cfg, request)
        headers = self._headers()

        def attempt(timeout: float) -> ChatResult:
            raw, _ = self.transport.post_json(
                self._url, body, headers, timeout=timeout, max_bytes=self.cfg.max_response_bytes
            )
            return chat_from_json_answer(self.name, request, raw, upstream=self.name)

        return self.guard.call(attempt, deadline=deadline)

    def chat_stream(self, request: JsonDict, *, deadline: float) -> ChatStream:
        return synthesized_chat_stream(self.chat(request, deadline=deadline))

    def invoke(self, body: JsonDict, *, deadline: float) -> tuple[JsonDict, Usage]:
        return invoke_result(self._post(body, deadline=deadline), body, upstream=self.name)
