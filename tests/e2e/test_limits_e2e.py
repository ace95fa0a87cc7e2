"""429s through `bulwark local`: contract headers and bodies, and the openai SDK's RateLimitError and retry."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
import requests
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.keys import create_key

pytestmark = pytest.mark.e2e
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": "demo-echo", "messages": MESSAGES, "max_tokens": 16}  # as raw HTTP sends it; the SDK gets the same


def test_429_has_retry_after_ratelimit_headers_and_names_the_limit(local_stack: Any) -> None:
    key, _ = create_key(local_stack.env, "developer", "--rpm", "2")
    h = {"Authorization": f"Bearer {key}"}
    codes = [
        requests.post(f"{local_stack.base_url}/v1/chat/completions", json=CHAT, headers=h, timeout=10) for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    r = codes[2]
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "requests_per_minute_exceeded"
    assert int(r.headers["Retry-After"]) >= 29  # 2 per minute: the next slot is 30 s away, never promised earlier
    assert r.headers["x-request-id"]
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["RateLimit-Policy"].startswith('"rpm";q=2;w=60')
    assert r.headers["RateLimit"].startswith('"rpm";r=0;t=')
    assert codes[1].headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_refusal_consumes_nothing(local_stack: Any) -> None:
    key, _ = create_key(local_stack.env, "developer", "--tpm", "3000")
    h = {"Authorization": f"Bearer {key}"}
    big = {**CHAT, "max_tokens": 4000}
    r = requests.post(f"{local_stack.base_url}/v1/chat/completions", json=big, headers=h, timeout=10)
    assert r.status_code == 429 and r.json()["error"]["code"] == "tokens_per_minute_exceeded"
    ok = requests.post(f"{local_stack.base_url}/v1/chat/completions", json=CHAT, headers=h, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-remaining-requests"] == str(int(ok.headers["x-ratelimit-limit-requests"]) - 1)


def test_openai_sdk_raises_rate_limit_error(local_stack: Any) -> None:
    key, _ = create_key(local_stack.env, "developer", "--rpm", "1")
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key, max_retries=0)
    client.chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=16)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=16)
    assert err.value.response.headers["Retry-After"]
    assert err.value.code == "requests_per_minute_exceeded"


def test_openai_sdk_retry_honours_retry_after(local_stack: Any) -> None:
    # 20 per minute = one slot every 3 s: the SDK's retry waits the advertised Retry-After and then succeeds.
    key, _ = create_key(local_stack.env, "developer", "--rpm", "20")
    seen: list[tuple[float, int, str | None]] = []

    def record(response: Any) -> None:
        seen.append((time.monotonic(), response.status_code, response.headers.get("Retry-After")))

    burst = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key, max_retries=0)
    while True:  # spend the bucket
        try:
            burst.chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=16)
        except openai.RateLimitError:
            break
    http = openai.DefaultHttpxClient(event_hooks={"response": [record]})  # the SDK's own HTTP client
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key, max_retries=3, http_client=http)
    r = client.chat.completions.with_raw_response.create(model="demo-echo", messages=MESSAGES, max_tokens=16)
    assert r.http_response.status_code == 200
    assert seen[0][1] == 429 and seen[-1][1] == 200
    retry_after = int(seen[0][2] or 0)
    assert retry_after >= 1
    # The SDK waited (at least about) what the 429 advertised before trying again, rather than hammering.
    assert seen[1][0] - seen[0][0] >= retry_after * 0.9
