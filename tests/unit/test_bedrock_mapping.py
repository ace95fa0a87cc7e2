"""OpenAI chat ⇄ Bedrock Converse mapping, both directions, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bulwark.errors import InvalidRequest
from bulwark.upstreams.bedrock import from_converse, to_converse
from bulwark.upstreams.guard import AttemptError


def test_roles_system_merging_tools_and_inference_config() -> None:
    request: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "S1"},
            {"role": "developer", "content": "S2"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
                    {"id": "t2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "rain"},
            {"role": "tool", "tool_call_id": "t2", "content": "noon"},
            {"role": "user", "content": "thanks"},
        ],
        "max_completion_tokens": 100,
        "top_p": 0.9,
        "stop": ["A", "B"],
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
    }
    params = to_converse(request, "m-1")
    assert params["modelId"] == "m-1"
    assert params["system"] == [{"text": "S1"}, {"text": "S2"}]
    assert params["messages"] == [
        {"role": "user", "content": [{"text": "weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}},
                {"toolUse": {"toolUseId": "t2", "name": "time", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"text": "rain"}]}},
                {"toolResult": {"toolUseId": "t2", "content": [{"text": "noon"}]}},
                {"text": "thanks"},
            ],
        },
    ]
    assert params["inferenceConfig"] == {"maxTokens": 100, "topP": 0.9, "stopSequences": ["A", "B"]}
    assert params["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}, "description": "d"}}],
        "toolChoice": {"tool": {"name": "weather"}},
    }


def test_minimal_request_has_no_optional_sections() -> None:
    assert to_converse({"messages": [{"role": "user", "content": "hi"}]}, "m") == {
        "modelId": "m",
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
    }


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
        {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "[1]"}}]},
        {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}]},
    ],
)
def test_unsupported_or_bad_content_is_a_400(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_converse({"messages": [message]}, "m")


def _answer(content: list[dict[str, Any]], stop: str, usage: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop}
    if usage:
        out["usage"] = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}
    return out


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    result = from_converse("mine", {}, _answer([{"text": "x"}], stop), upstream="u")
    assert result.body["choices"][0]["finish_reason"] == finish


def test_text_and_tool_use_blocks_and_usage() -> None:
    raw = _answer(
        [{"text": "a"}, {"text": "b"}, {"toolUse": {"toolUseId": "id1", "name": "f", "input": {"k": [1]}}}], "tool_use"
    )
    result = from_converse("mine", {}, raw, upstream="u")
    message = result.body["choices"][0]["message"]
    assert result.body["model"] == "mine"
    assert message["content"] == "ab"
    assert message["tool_calls"] == [
        {"id": "id1", "type": "function", "function": {"name": "f", "arguments": '{"k": [1]}'}}
    ]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"k": [1]}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (7, 3, False)
    assert result.body["usage"]["total_tokens"] == 10


def test_missing_usage_is_estimated() -> None:
    req = {"messages": [{"role": "user", "content": "one two three"}]}
    result = from_converse("m", req, _answer([{"text": "four five"}], "end_turn", usage=False), upstream="u")
    assert result.usage.estimated is True and result.usage.prompt_tokens >= 3


@pytest.mark.parametrize(
    "raw", [{"message": "{not json"}, {"output": {}}, {"output": {"message": {}}, "stopReason": 1}, []]
)
def test_malformed_answers_are_attempt_errors(raw: Any) -> None:
    with pytest.raises(AttemptError):
        from_converse("m", {}, raw, upstream="u")
