"""SageMaker InvokeEndpoint and InvokeEndpointWithResponseStream via real boto3 against wire/sagemaker.py: invoke, chat
(messages API, template), streams, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bulwark.errors import UpstreamError, UpstreamTimeout
from bulwark.upstreams import Upstream, build_upstream
from tests.integration.wire import sagemaker
from tests.integration.wire.fixtures import RecordingSleep, config, deadline, new_clients, use_aws_env
from tests.integration.wire.server import Reply, WireServer

CHAT = {"model": "sm", "messages": [{"role": "user", "content": "classify this text"}], "max_tokens": 16}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[WireServer]:
    use_aws_env(monkeypatch)
    srv = sagemaker.start()
    yield srv
    srv.stop()


def upstream_for(url: str, **fields: object) -> tuple[Upstream, RecordingSleep]:
    clients, sleep = new_clients()
    cfg = config("sagemaker", endpoint_name="fraud-xgb-prod", endpoint_url=url, region="us-east-1", **fields)
    return build_upstream("sm", cfg, clients=clients), sleep


def test_invoke_passes_the_validated_body_through(server: WireServer, caplog: pytest.LogCaptureFixture) -> None:
    upstream, _ = upstream_for(server.url)
    with caplog.at_level("INFO"):
        answer, usage = upstream.invoke({"features": [0.1, 0.2]}, deadline=deadline())
    seen = server.requests[-1]
    assert seen.path == "/endpoints/fraud-xgb-prod/invocations"
    assert seen.headers["content-type"] == "application/json" and seen.headers["authorization"].startswith("AWS4-")
    assert answer == {"prediction": [0.25, 0.75], "echo": {"features": [0.1, 0.2]}}
    assert usage.estimated is True and any("estimated" in r.getMessage() for r in caplog.records)


def test_chat_with_a_messages_api_endpoint_uses_its_usage(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)
    result = upstream.chat(CHAT, deadline=deadline())
    assert server.requests[-1].json() == {"messages": CHAT["messages"], "max_tokens": 16}
    assert result.body["model"] == "sm" and result.usage.estimated is False
    assert list(upstream.chat_stream(CHAT, deadline=deadline()))[-1]["usage"] == result.body["usage"]


def test_a_messages_api_endpoint_streams_as_the_container_writes(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)
    server.script(sagemaker.stream_reply({"messages": CHAT["messages"]}, chunk_delay=0.03))

    started = time.perf_counter()
    arrivals, chunks = [], []
    for item in upstream.chat_stream(CHAT, deadline=deadline()):
        arrivals.append(time.perf_counter() - started)
        chunks.append(item)

    sent = server.requests[-1]
    assert sent.path == "/endpoints/fraud-xgb-prod/invocations-response-stream"
    assert sent.json()["stream"] is True and sent.json()["stream_options"] == {"include_usage": True}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo from the Bulwark demo model: classify this text".replace(" ", "")
    assert chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["model"] == "sm"
    # PayloadPart events arrive 30 ms apart: the chunks follow them, not all at the end.
    assert arrivals[-1] - arrivals[0] > 0.1


def test_a_model_stream_error_event_mid_stream_is_an_upstream_error(server: WireServer) -> None:
    from tests.integration.wire import eventstream

    upstream, _ = upstream_for(server.url)
    good = sagemaker.stream_reply({"messages": CHAT["messages"]}).chunks
    assert good is not None
    failure = eventstream.encode_message(
        {":event-type": "ModelStreamError", ":content-type": "application/json", ":message-type": "exception"},
        b'{"Message": "container gpu-3.internal died", "ErrorCode": "500"}',
    )
    server.script(Reply(200, {"Content-Type": eventstream.CONTENT_TYPE}, chunks=[*list(good)[:3], failure]))

    stream = upstream.chat_stream(CHAT, deadline=deadline())
    with pytest.raises(UpstreamError) as err:
        list(stream)
    assert "gpu-3" not in err.value.message


def test_chat_through_a_template_on_a_generate_endpoint(server: WireServer) -> None:
    upstream, _ = upstream_for(
        server.url, input_template={"inputs": "$prompt", "parameters": {"max_new_tokens": "$max_tokens"}}
    )
    result = upstream.chat(CHAT, deadline=deadline())
    assert server.requests[-1].json() == {"inputs": "classify this text", "parameters": {"max_new_tokens": 16}}
    assert result.body["choices"][0]["message"]["content"] == "Generated for: classify this text"
    assert result.usage.estimated is True


def test_model_error_from_the_container_is_a_502_without_its_text(server: WireServer) -> None:
    upstream, sleep = upstream_for(server.url)
    server.script(sagemaker.error("ModelError", 424, {"OriginalStatusCode": 400, "OriginalMessage": "bad tensor"}))
    with pytest.raises(UpstreamError) as err:
        upstream.invoke({"x": 1}, deadline=deadline())
    assert err.value.status == 502 and "tensor" not in err.value.message
    assert len(server.requests) == 1 and sleep.waits == []


def test_throttling_then_success_is_retried(server: WireServer) -> None:
    upstream, sleep = upstream_for(server.url)
    server.script(sagemaker.error("ThrottlingException", 429), sagemaker.error("ServiceUnavailable", 503))
    answer, _ = upstream.invoke({"x": 1}, deadline=deadline())
    assert answer["prediction"] and len(server.requests) == 3 and len(sleep.waits) == 2


def test_malformed_json_is_a_502(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url)
    server.script(Reply(200, {"Content-Type": "application/json"}, b"[{]"))
    with pytest.raises(UpstreamError):
        upstream.invoke({"x": 1}, deadline=deadline())


def test_oversized_answer_is_a_502(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url, max_response_bytes=100)
    server.script(Reply.json({"blob": "x" * 1000}))
    with pytest.raises(UpstreamError):
        upstream.invoke({"x": 1}, deadline=deadline())


def test_slow_endpoint_times_out_with_504(server: WireServer) -> None:
    upstream, _ = upstream_for(server.url, timeout_seconds=0.4, max_retries=0)
    # The endpoint answers far later than the 0.4 s timeout: the call ends well before the answer (a loaded machine
    # can add a second or two to the 0.4 s, never the 6 s the answer takes).
    server.script(Reply.json({"late": True}, delay=6.0))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        upstream.invoke({"x": 1}, deadline=deadline())
    assert time.monotonic() - started < 4.0
