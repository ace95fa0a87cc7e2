"""Bedrock Converse / ConverseStream via real boto3 (SigV4, rest-json, event-stream parsing) against wire/bedrock.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from bulwark.errors import UpstreamError, UpstreamTimeout
from bulwark.upstreams import Upstream, build_upstream
from tests.integration.wire import bedrock, eventstream
from tests.integration.wire.fixtures import RecordingSleep, config, deadline, new_clients, use_aws_env
from tests.integration.wire.server import Reply, WireServer, unused_port

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
REQUEST = {
    "model": "claude",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "there"},
    ],
    "max_tokens": 64,
    "temperature": 0.2,
    "stop": "END",
}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[WireServer]:
    use_aws_env(monkeypatch)
    srv = bedrock.start()
    yield srv
    srv.stop()


def upstream_for(url: str, **fields: object) -> tuple[Upstream, RecordingSleep]:
    clients, sleep = new_clients()
    cfg = config("bedrock", model_id=MODEL_ID, endpoint_url=url, region="us-east-1", **fields)
    return build_upstream("claude", cfg, clients=clients), sleep


def test_converse_request_is_signed_and_mapped(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)

    result = upstream.chat(REQUEST, deadline=deadline())

    seen = server.requests[-1]
    assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLEBULWARK/")
    assert bedrock.model_id(seen) == MODEL_ID
    assert seen.json() == {
        "messages": [{"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "stopSequences": ["END"]},
    }
    assert result.body["model"] == "claude"
    assert result.body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": bedrock.ANSWER},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (11, 4, False)


def test_tool_calls_map_both_ways(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)

    result = upstream.chat({**REQUEST, "tools": TOOLS, "tool_choice": "required"}, deadline=deadline())

    sent = server.requests[-1].json()["toolConfig"]
    assert sent == {
        "tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}}}],
        "toolChoice": {"any": {}},
    }
    message = result.body["choices"][0]["message"]
    assert result.body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [
        {"id": "tooluse_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    ]


def test_converse_stream_event_stream_becomes_openai_chunks(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)

    stream = upstream.chat_stream(REQUEST, deadline=deadline())
    chunks = list(stream)

    assert server.requests[-1].path.endswith("/converse-stream")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.strip() == bedrock.ANSWER
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 4,
        "total_tokens": 15,
    }
    assert stream.usage is not None and stream.usage.estimated is False


def test_converse_stream_tool_use(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)

    chunks = list(upstream.chat_stream({**REQUEST, "tools": TOOLS}, deadline=deadline()))

    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "tooluse_1",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_exception_event_mid_stream_raises_upstream_error(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)
    events = [*bedrock.stream_events({})[:3], eventstream.exception("modelStreamErrorException", "gpu fell over")]
    server.script(bedrock.stream_reply(events))

    stream = upstream.chat_stream(REQUEST, deadline=deadline())
    first = next(stream)
    with pytest.raises(UpstreamError) as err:
        list(stream)
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert "gpu" not in err.value.message


def test_throttling_is_retried_honouring_retry_after(server: WireServer) -> None:
    upstream, sleep = upstream_for(server.url)
    server.script(bedrock.error("ThrottlingException", 429, {"Retry-After": "1"}))

    result = upstream.chat(REQUEST, deadline=deadline())

    assert result.body["choices"][0]["message"]["content"] == bedrock.ANSWER
    assert sleep.waits == [1.0] and len(server.requests) == 2


def test_persistent_5xx_is_a_502_without_internal_detail(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url, max_retries=1)
    server.script(*[bedrock.error("InternalServerException", 500)] * 2)

    with pytest.raises(UpstreamError) as err:
        upstream.chat(REQUEST, deadline=deadline())

    assert err.value.status == 502 and len(server.requests) == 2
    assert "arn:" not in json.dumps(err.value.to_body())


def test_validation_error_is_not_retried(server: WireServer) -> None:
    upstream, sleep = upstream_for(server.url)
    server.script(bedrock.error("ValidationException", 400))
    with pytest.raises(UpstreamError):
        upstream.chat(REQUEST, deadline=deadline())
    assert len(server.requests) == 1 and sleep.waits == []


def test_malformed_json_answer_is_a_502(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)
    server.script(Reply(200, {"Content-Type": "application/json"}, b'{"output": {"message":'))
    with pytest.raises(UpstreamError) as err:
        upstream.chat(REQUEST, deadline=deadline())
    assert err.value.status == 502 and len(server.requests) == 1


def test_oversized_answer_is_a_502(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url, max_response_bytes=200)
    big = bedrock.converse_answer({})
    big["output"]["message"]["content"] = [{"text": "x" * 1000}]
    server.script(Reply.json(big))
    with pytest.raises(UpstreamError):
        upstream.chat(REQUEST, deadline=deadline())


def test_slow_model_times_out_with_504(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url, timeout_seconds=0.5, max_retries=0)
    # The model answers far later than the 0.5 s timeout: the call ends well before the answer (a loaded machine can
    # add a second or two to the 0.5 s, never the 6 s the answer takes).
    server.script(Reply.json(bedrock.converse_answer({}), delay=6.0))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        upstream.chat(REQUEST, deadline=deadline())
    assert time.monotonic() - started < 4.0


def test_connection_refused_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    use_aws_env(monkeypatch)
    upstream, sleep = upstream_for(f"http://127.0.0.1:{unused_port()}", max_retries=1)
    with pytest.raises(UpstreamError) as err:
        upstream.chat(REQUEST, deadline=deadline())
    assert err.value.status == 502 and len(sleep.waits) == 1
