"""THE redaction test: a full session against the local stack, then every captured log line is searched.

Real clients (the `openai` SDK and raw HTTP) send a valid key, wrong keys, a JWT-shaped garbage token, credentials
in the query string and in two headers at once, and prompts full of PII and cloud credentials — through the
authorizer, the validator and the invoker. No credential and no PII string sent may appear in any line any function
wrote, at any level, including exception traces, in the console stream or in the session's JSONL file.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import openai
import pytest

from bulwark.auth import keys as keyfmt
from tests.e2e.audit_session import create_key, post_chat, wait_for_audit

pytestmark = pytest.mark.e2e

PII = {
    "email": "alice.wonder+e2e@example.org",
    "phone": "+1 415-555-0199",
    "card": "4111 1111 1111 1111",
    "card_dashed": "5500-0000-0000-0004",
    "ssn": "078-05-1120",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "aws_key_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}
PROMPT = (
    f"Please help. My email is {PII['email']}, call me on {PII['phone']}. Card {PII['card']} and "
    f"{PII['card_dashed']}, SSN {PII['ssn']}, IBAN {PII['iban']}. My AWS keys: {PII['aws_key_id']} "
    f"aws_secret_access_key={PII['aws_secret']}"
)
JWT_GARBAGE = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2VkLXNpZ25hdHVyZS1nYXJiYWdl"
OPAQUE_GARBAGE = "sk-live-garbage-credential-7f3a9c1e55"


def _variants(secret: str) -> set[str]:
    """The forms a string could take in a log line: as sent, JSON-escaped, URL-encoded."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }


@pytest.fixture(scope="module")
def session(local_stack: Any) -> dict[str, Any]:
    base = local_stack.base_url
    key = create_key(local_stack.env, "redaction-e2e")
    valid = key["api_key"]
    parsed = keyfmt.parse_api_key(valid)
    assert parsed is not None
    wrong_secret, _ = keyfmt.new_api_key(parsed.key_id)  # right id, right checksum, wrong secret
    unknown_key, _ = keyfmt.new_api_key()  # well-formed, not stored
    mistyped = valid[:-3] + ("aaa" if not valid.endswith("aaa") else "bbb")  # checksum fails
    credentials = {
        "valid": valid,
        "valid_secret_part": valid.split("_")[2][:20],
        "wrong_secret": wrong_secret,
        "unknown_key": unknown_key,
        "mistyped": mistyped,
        "jwt_garbage": JWT_GARBAGE,
        "opaque_garbage": OPAQUE_GARBAGE,
    }
    responses: list[Any] = []

    # The openai SDK with the valid key: plain and streamed, PII in the prompt
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=valid, max_retries=0)
    completion = client.chat.completions.create(
        model="demo-echo", messages=[{"role": "user", "content": PROMPT}], max_tokens=64
    )
    assert completion.choices[0].message.content is not None
    assert PII["email"] not in completion.choices[0].message.content  # redacted before the model saw it
    stream = client.chat.completions.create(
        model="demo-echo", messages=[{"role": "user", "content": PROMPT}], max_tokens=64, stream=True
    )
    assert sum(1 for _ in stream) > 0
    assert any(m.id == "demo-echo" for m in client.models.list())

    # The SDK with wrong credentials: each one a 401
    for bad in (wrong_secret, unknown_key, mistyped, JWT_GARBAGE, OPAQUE_GARBAGE):
        bad_client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=bad, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad_client.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": PROMPT}])

    # Raw HTTP: x-api-key, credentials in the query string, two credentials, Basic auth, bad JSON and bad fields
    responses.append(post_chat(base, {"x-api-key": valid}, PROMPT))
    responses.append(post_chat(base, {}, PROMPT, query=f"?api_key={urllib.parse.quote(valid)}"))
    responses.append(post_chat(base, {}, PROMPT, query=f"?access_token={JWT_GARBAGE}"))
    responses.append(post_chat(base, {"Authorization": f"Bearer {valid}"}, PROMPT, query=f"?key={OPAQUE_GARBAGE}"))
    responses.append(post_chat(base, {"Authorization": f"Bearer {valid}", "x-api-key": wrong_secret}, PROMPT))
    responses.append(post_chat(base, {"Authorization": f"Basic {OPAQUE_GARBAGE}"}, PROMPT))
    responses.append(post_chat(base, {"Authorization": f"Bearer {JWT_GARBAGE}"}, PROMPT))
    responses.append(post_chat(base, {"x-api-key": OPAQUE_GARBAGE}, PROMPT))
    broken = '{"model": "demo-echo", "messages": [{"role": "user", "content": "' + PROMPT + '"}'
    responses.append(post_chat(base, {"Authorization": f"Bearer {valid}"}, PROMPT, body=broken))
    unknown_field = json.dumps(
        {"model": "demo-echo", "messages": [{"role": "user", "content": PROMPT}], PII["email"]: PII["card"]}
    )
    responses.append(post_chat(base, {"Authorization": f"Bearer {valid}"}, PROMPT, body=unknown_field))
    bad_value = json.dumps({"model": "demo-echo", "messages": [{"role": PII["ssn"], "content": PROMPT}]})
    responses.append(post_chat(base, {"Authorization": f"Bearer {valid}"}, PROMPT, body=bad_value))

    statuses = [r.status_code for r in responses]
    assert statuses[0] == 200
    assert all(s == 401 for s in statuses[1:8]), statuses
    assert all(s == 400 for s in statuses[8:]), statuses
    for r in responses:
        for secret in credentials.values():
            assert secret not in r.text  # nor in what the client is told

    # Every request has its audit record in the log before we search it
    assert local_stack.log_file is not None
    wait_for_audit(local_stack.log_file, {r.headers["x-request-id"] for r in responses})
    return {"credentials": credentials, "responses": responses}


def test_no_credential_or_pii_in_any_log_line(local_stack: Any, session: dict[str, Any]) -> None:
    # Given everything the functions wrote: the console stream and the JSONL file
    stream_text = "\n".join(local_stack.log_lines)
    file_text = local_stack.log_file.read_text(encoding="utf-8")
    assert file_text.strip(), "the session wrote no log lines"
    haystacks = {"console": stream_text, "jsonl": file_text}
    # When searched for every credential and PII string sent
    leaks = [
        (where, name, variant)
        for name, secret in {**session["credentials"], **PII}.items()
        for variant in _variants(secret)
        for where, text in haystacks.items()
        if variant in text
    ]
    # Then none is there
    assert not leaks, leaks


def test_every_function_logged_and_lines_are_json(local_stack: Any, session: dict[str, Any]) -> None:
    records = [json.loads(line) for line in local_stack.log_file.read_text(encoding="utf-8").splitlines()]
    functions = {str(r.get("function_name", "")) for r in records}
    for fn in ("authorizer", "validator", "invoker"):
        assert any(fn in f.lower() for f in functions), functions
    # The correlation id of a request is the API Gateway request id, in every function's lines
    rid = session["responses"][0].headers["x-request-id"]
    with_rid = [r for r in records if r.get("correlation_id") == rid]
    assert {str(r.get("service")) for r in with_rid} >= {"bulwark-authorizer", "bulwark-validator"}
    # (the invoker logs only failures; whatever it logs for a request carries that request's id)
    invoker_lines = [r for r in records if r.get("service") == "bulwark-invoker" and "level" in r and "_aws" not in r]
    assert all(r.get("correlation_id") for r in invoker_lines)
    # The failures are explained: the reason is logged, the credential is not
    reasons = {r.get("reason") for r in records if r.get("decision") == "deny"}
    assert {"credential_in_query_string", "wrong_secret", "two_different_credentials"} <= reasons
