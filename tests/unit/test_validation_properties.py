"""Property: no input makes the validator pipeline raise anything but a 4xx BulwarkError."""

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulwark.errors import BulwarkError
from bulwark.guardrails.apply import apply_input_guardrails
from bulwark.guardrails.injection import detect_injection
from bulwark.guardrails.pii import redact_pii
from bulwark.policy import GuardrailPolicy, RequestRules
from bulwark.validation.chat import canonical_json, estimate_prompt_tokens, validate_chat_request
from bulwark.validation.jsonparse import parse_json_body
from bulwark.validation.sanitize import sanitize_chat, sanitize_text

POLICY = GuardrailPolicy(prompt_injection="block", pii_input="redact")


def pipeline(body: bytes) -> None:
    try:
        doc = parse_json_body(body, max_bytes=100_000, max_depth=16, max_number_digits=40)
        req = sanitize_chat(validate_chat_request(doc, RequestRules()))
        out = apply_input_guardrails(req, POLICY)
        canonical_json(out.request)
        estimate_prompt_tokens(out.request)
    except BulwarkError as exc:
        assert 400 <= exc.status < 500, exc


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"])
parts = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "refusal", "y"]), "text": st.text()})
messages = st.fixed_dictionaries(
    {"role": roles, "content": st.one_of(st.text(), st.lists(parts, max_size=3), st.none(), st.integers())},
    optional={"tool_call_id": st.text(max_size=5), "name": st.text(max_size=5), "zz": json_values},
)
chat_docs = st.fixed_dictionaries(
    {"model": st.text(max_size=10), "messages": st.lists(messages, max_size=4)},
    optional={
        "max_tokens": st.integers(),
        "temperature": st.floats(allow_nan=False),
        "stop": json_values,
        "tool_choice": json_values,
        "response_format": json_values,
        "stream": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_given_arbitrary_bytes_when_validated_then_only_4xx(body: bytes) -> None:
    pipeline(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_docs)
def test_given_chat_shaped_documents_when_validated_then_only_4xx(doc: dict[str, Any]) -> None:
    pipeline(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_given_any_text_when_sanitized_then_idempotent_and_guardrails_total(text: str) -> None:
    once = sanitize_text(text)
    assert sanitize_text(once) == once
    detect_injection(text)
    redacted, _kinds = redact_pii(text)
    assert isinstance(redacted, str)
