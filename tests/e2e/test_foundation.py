"""The walking skeleton through `bulwark local`: curl-style HTTP and the official openai SDK, key to completion."""

from __future__ import annotations

from typing import Any

import openai
import pytest
import requests

from tests.e2e.keys import create_key

pytestmark = pytest.mark.e2e
CHAT = {"model": "demo-echo", "messages": [{"role": "user", "content": "Hello from e2e"}]}


@pytest.fixture(scope="module")
def key(local_stack: Any) -> str:
    return create_key(local_stack.env)[0]


def test_openai_sdk_gets_a_completion(local_stack: Any, key: str) -> None:
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key)
    r = client.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == "Echo from the Bulwark demo model: Hello"
    assert r.usage is not None and r.usage.total_tokens > 0


def test_openai_sdk_streams(local_stack: Any, key: str) -> None:
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key)
    stream = client.chat.completions.create(
        model="demo-echo",
        messages=[{"role": "user", "content": "Stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo from the Bulwark demo model: Stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_raw_http_has_the_contract_headers(local_stack: Any, key: str) -> None:
    r = requests.post(
        f"{local_stack.base_url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["x-request-id"]
    for h in (
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "RateLimit-Policy",
        "RateLimit",
    ):
        assert h in r.headers, h


def test_x_api_key_header_is_accepted(local_stack: Any, key: str) -> None:
    r = requests.get(f"{local_stack.base_url}/v1/models", headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["demo-echo", "legacy-echo"]  # legacy-echo: tests/e2e/conftest.py


@pytest.mark.parametrize("auth", [None, "Bearer bwk_nope", "Bearer not-a-key", "Basic dXNlcjpwYXNz", "Bearer "])
def test_wrong_credentials_get_one_401_in_the_contract_shape(local_stack: Any, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = requests.post(f"{local_stack.base_url}/v1/chat/completions", json=CHAT, headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.headers["x-request-id"]
    assert r.json() == {
        "error": {
            "message": r.json()["error"]["message"],
            "type": "authentication_error",
            "param": None,
            "code": "invalid_credentials",
        }
    }


def test_openai_sdk_raises_authentication_error_for_a_wrong_key(local_stack: Any) -> None:
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key="bwk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_credential_in_query_string_is_refused_and_never_echoed(local_stack: Any, key: str) -> None:
    r = requests.get(f"{local_stack.base_url}/v1/models?api_key={key}", timeout=10)
    assert r.status_code == 401
    assert key not in r.text


def test_unknown_route_is_a_contract_shaped_404(local_stack: Any, key: str) -> None:
    r = requests.get(f"{local_stack.base_url}/v1/nothing", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code in (403, 404)
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_model_that_does_not_exist_answers_like_a_forbidden_one(local_stack: Any, key: str) -> None:
    partner_key = create_key(local_stack.env, "readonly")[0]
    missing = requests.post(
        f"{local_stack.base_url}/v1/chat/completions",
        timeout=10,
        json={**CHAT, "model": "no-such-model"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert missing.status_code == 403 and missing.json()["error"]["code"] == "model_not_allowed"
    denied = requests.get(
        f"{local_stack.base_url}/v1/models", headers={"Authorization": f"Bearer {partner_key}"}, timeout=10
    )
    assert denied.status_code == 200 and denied.json()["data"] == []


def test_idempotency_key_returns_the_first_result_without_calling_the_model_again(local_stack: Any, key: str) -> None:
    url = f"{local_stack.base_url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "e2e-order-42"}
    first = requests.post(url, json=CHAT, headers=headers, timeout=10)
    again = requests.post(url, json=CHAT, headers=headers, timeout=10)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]  # the stored completion, not a new one
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = requests.post(
        url, json={**CHAT, "messages": [{"role": "user", "content": "different"}]}, headers=headers, timeout=10
    )
    assert other.status_code == 400 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_the_stack_keeps_its_tables_in_a_database_of_its_own(local_stack: Any, key: str, shared_dynamodb: Any) -> None:
    """The test stacks share one DynamoDB Local per process: this stack's tables, and the key just made in them, are
    in its own database there, and in no other."""
    stack = local_stack.stack
    assert stack.dynamodb is shared_dynamodb
    own = stack.dynamodb_client()
    keys_table = local_stack.table_names["KeysTable"]
    assert set(local_stack.table_names.values()) <= set(own.list_tables()["TableNames"])
    assert own.scan(TableName=keys_table, Select="COUNT")["Count"] >= 1
    other = shared_dynamodb.client("someoneelse")
    assert other.list_tables()["TableNames"] == []
    assert local_stack.env["AWS_ACCESS_KEY_ID"] == stack.dynamodb_credentials["AWS_ACCESS_KEY_ID"] != "local"
