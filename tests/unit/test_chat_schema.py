import json
from typing import Any

import pytest

from bulwark.errors import InvalidRequest, UnknownParameter
from bulwark.policy import RequestRules
from bulwark.validation.chat import canonical_json, estimate_prompt_tokens, validate_chat_request

RULES = RequestRules()
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
TOOL_WITH_DESCRIPTION = {"type": "function", "function": {"name": "lookup", "description": "abc"}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": [{"role": "user", "content": "Hello"}], **extra}


FULL = chat(
    messages=[
        {"role": "system", "content": "Be brief.", "name": "ops"},
        {"role": "developer", "content": [{"type": "text", "text": "Dev note"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}], "refusal": None},
    ],
    max_tokens=100,
    max_completion_tokens=100,
    temperature=0.5,
    top_p=1,
    n=1,
    stop=["\n"],
    stream=True,
    stream_options={"include_usage": True},
    presence_penalty=0,
    frequency_penalty=0.1,
    logit_bias={"50256": -100},
    seed=7,
    user="u-1",
    tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    tool_choice={"type": "function", "function": {"name": "lookup"}},
    parallel_tool_calls=False,
    logprobs=True,
    top_logprobs=2,
    metadata={"k": "v"},
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    },
)


def test_given_every_supported_field_when_validated_then_accepted_and_round_trips() -> None:
    req = validate_chat_request(FULL, RULES)
    again = validate_chat_request(json.loads(canonical_json(req)), RULES)
    assert canonical_json(again) == canonical_json(req)


def test_given_a_request_when_canonicalized_then_sorted_compact_and_only_sent_fields() -> None:
    out = canonical_json(validate_chat_request(chat(temperature=1), RULES))
    assert out == b'{"messages":[{"content":"Hello","role":"user"}],"model":"demo","temperature":1.0}'


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        (chat(foo=1), "foo"),
        (chat(messages=[{"role": "user", "content": "x", "extra": 1}]), "messages[0].extra"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "zz": 1}]}]),
            "messages[0].content[0].zz",
        ),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "bad": 1}}),
            "response_format.json_schema.bad",
        ),
        (chat(stream_options={"include_usage": True, "x": 1}), "stream_options.x"),
        (chat(tools=[{"type": "function", "function": {"name": "f", "evil": 1}}]), "tools[0].function.evil"),
    ],
)
def test_given_an_unknown_parameter_when_validated_then_unknown_parameter_with_its_path(doc: Any, param: str) -> None:
    with pytest.raises(UnknownParameter) as info:
        validate_chat_request(doc, RULES)
    assert info.value.param == param
    assert info.value.code == "unknown_parameter"


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        (chat(model=""), "model"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "user"}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": [{"type": "audio", "x": 1}]}]), "messages[0].content[0].type"),
        (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (chat(temperature="1"), "temperature"),  # strict: no coercion from strings
        (chat(temperature=3), "temperature"),
        (chat(max_tokens=True), "max_tokens"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(n=1.5), "n"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(tool_choice="sometimes"), "tool_choice"),
        (chat(response_format={"type": "xml"}), "response_format.type"),
        (chat(logit_bias={"abc": 1}), "logit_bias.abc"),
    ],
)
def test_given_a_schema_violation_when_validated_then_invalid_value_naming_the_field(doc: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(doc, RULES)
    assert not isinstance(info.value, UnknownParameter)
    assert info.value.code == "invalid_value"
    assert info.value.param == param


def test_given_a_non_object_body_when_validated_then_invalid_value() -> None:
    with pytest.raises(InvalidRequest):
        validate_chat_request(["not", "an", "object"], RULES)


def test_given_a_bad_value_when_refused_then_the_message_does_not_echo_it() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(chat(user=["TOPSECRET-123"]), RULES)
    assert "TOPSECRET-123" not in info.value.message
    assert "user" in info.value.message


@pytest.mark.parametrize(
    ("rules", "doc", "param"),
    [
        (RequestRules(max_messages=1), chat(messages=[{"role": "user", "content": "a"}] * 2), "messages"),
        (
            RequestRules(max_message_chars=5),
            chat(messages=[{"role": "user", "content": "abcdef"}]),
            "messages[0].content",
        ),
        (RequestRules(max_total_chars=5), chat(messages=[{"role": "user", "content": "abc"}] * 2), "messages"),
        (
            RequestRules(max_total_chars=5),
            chat(messages=[{"role": "user", "content": "abc"}], tools=[TOOL_WITH_DESCRIPTION]),
            "tools",
        ),
        (RequestRules(max_tokens=10), chat(max_tokens=11), "max_tokens"),
        (
            RequestRules(max_content_parts=3),
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}] * 2}] * 2),
            "messages",
        ),
        (
            RequestRules(max_content_parts=3),
            chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [CALL] * 3}]),
            "messages",
        ),
        (RequestRules(max_tokens=10), chat(max_completion_tokens=11), "max_completion_tokens"),
        (
            RequestRules(allowed_message_roles=("user",)),
            chat(messages=[{"role": "system", "content": "x"}]),
            "messages[0].role",
        ),
    ],
)
def test_given_role_caps_when_exceeded_then_invalid_value_naming_the_rule(
    rules: RequestRules, doc: Any, param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(doc, rules)
    assert info.value.param == param


def test_given_caps_when_exactly_met_then_accepted() -> None:
    rules = RequestRules(max_messages=2, max_message_chars=3, max_total_chars=6, max_tokens=10)
    validate_chat_request(chat(messages=[{"role": "user", "content": "abc"}] * 2, max_tokens=10), rules)
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}] * 2},
        {"role": "assistant", "tool_calls": [CALL]},
    ]
    validate_chat_request(chat(messages=[*parts, {"role": "user", "content": "b"}]), RequestRules(max_content_parts=4))


def test_given_a_body_of_30000_tiny_parts_when_validated_then_refused_by_count_before_the_schema() -> None:
    # A 1 MiB body holds ~30,000 one-character parts: refused on the count, before the schema validates each one
    # (and never reaching the guardrails, which cost a few hundred microseconds a text).
    doc = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}] * 470}] * 64)
    doc["messages"][0]["content"][0] = {"type": "bogus"}  # a schema error the count check must come before
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(doc, RULES)
    assert info.value.param == "messages" and "256 content parts" in info.value.message


def test_given_text_when_tokens_estimated_then_at_least_a_quarter_of_the_characters() -> None:
    text = "word " * 1000
    est = estimate_prompt_tokens(validate_chat_request(chat(messages=[{"role": "user", "content": text}]), RULES))
    assert est >= len(text) / 4
    assert est < len(text)  # still cheap enough to not over-reserve wildly


def test_given_images_when_tokens_estimated_then_they_count() -> None:
    plain = estimate_prompt_tokens(validate_chat_request(chat(), RULES))
    image = chat(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "image_url", "image_url": {"url": "https://x"}},
                ],
            }
        ]
    )
    assert estimate_prompt_tokens(validate_chat_request(image, RULES)) > plain + 500


def test_unknown_parameter_names_plain_names_but_never_reflects_odd_ones() -> None:
    from bulwark.errors import UnknownParameter
    from bulwark.policy import RequestRules
    from bulwark.validation.chat import validate_chat_request

    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(UnknownParameter) as err:
        validate_chat_request({**base, "frobnicate": 1}, RequestRules())
    assert err.value.param == "frobnicate" and "frobnicate" not in err.value.message
    with pytest.raises(UnknownParameter) as err:
        validate_chat_request({**base, "ana@example.com<script>": 1}, RequestRules())
    assert err.value.param == "<unrecognized>"
    assert "ana@example.com" not in err.value.message
