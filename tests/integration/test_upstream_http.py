"""The plain HTTP JSON (legacy) adapter against a local HTTP server: pass-through, templates and every failure mode."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bulwark.errors import UpstreamError, UpstreamTimeout
from bulwark.upstreams import build_upstream
from tests.integration.wire import openai
from tests.integration.wire.fixtures import config, deadline, new_clients
from tests.integration.wire.server import Reply, Request, WireServer, unused_port

CHAT = {"model": "legacy", "messages": [{"role": "user", "content": "score this please"}], "max_tokens": 20}


def legacy_responder(request: Request) -> Reply:
    body = request.json()
    if "prompt" in body:
        return Reply.json({"generated_text": f"ok: {body['prompt']}", "usage": {"input_tokens": 3, "output_tokens": 2}})
    return Reply.json({"score": 0.9, "echo": body})


@pytest.fixture
def server() -> Iterator[WireServer]:
    srv = WireServer(legacy_responder).start()
    yield srv
    srv.stop()


def upstream_for(server: WireServer, **fields: object):  # type: ignore[no-untyped-def]
    clients, sleep = new_clients()
    return build_upstream("legacy", config("http", url=server.url + "/score", **fields), clients=clients), sleep


def test_invoke_passes_the_body_through_and_estimates_usage(
    server: WireServer, caplog: pytest.LogCaptureFixture
) -> None:
    upstream, _ = upstream_for(server)
    with caplog.at_level("INFO"):
        answer, usage = upstream.invoke({"features": [1, 2, 3]}, deadline=deadline())
    assert answer == {"score": 0.9, "echo": {"features": [1, 2, 3]}}
    assert usage.estimated is True
    assert any("estimated" in r.getMessage() for r in caplog.records)
    assert server.requests[-1].path == "/score"


def test_chat_through_an_input_template(server: WireServer) -> None:
    upstream, _ = upstream_for(server, input_template={"prompt": "$last_user_message", "max_new_tokens": "$max_tokens"})
    result = upstream.chat(CHAT, deadline=deadline())
    assert server.requests[-1].json() == {"prompt": "score this please", "max_new_tokens": 20}
    assert result.body["choices"][0]["message"]["content"] == "ok: score this please"
    assert result.usage.estimated is False and result.usage.prompt_tokens == 3
    stream = upstream.chat_stream(CHAT, deadline=deadline())  # synthesized from one call
    assert list(stream)[-1]["usage"]["completion_tokens"] == 2


def test_500_then_success_is_retried_with_jitter(server: WireServer) -> None:
    upstream, sleep = upstream_for(server)
    server.script(openai.error(500))
    answer, _ = upstream.invoke({"x": 1}, deadline=deadline())
    assert answer["score"] == 0.9
    assert len(server.requests) == 2
    assert len(sleep.waits) == 1 and 0 <= sleep.waits[0] <= 0.1  # full jitter within the first backoff step


def test_429_retry_after_is_honoured(server: WireServer) -> None:
    upstream, sleep = upstream_for(server)
    server.script(openai.error(429, {"Retry-After": "1"}))
    started = time.monotonic()
    upstream.invoke({"x": 1}, deadline=deadline())
    assert sleep.waits == [1.0]
    assert time.monotonic() - started >= 1.0


def test_429_retry_after_beyond_the_deadline_gives_up_at_once(server: WireServer) -> None:
    upstream, sleep = upstream_for(server)
    server.script(openai.error(429, {"Retry-After": "30"}))
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        upstream.invoke({"x": 1}, deadline=deadline(5))
    assert time.monotonic() - started < 1
    assert sleep.waits == [] and len(server.requests) == 1
    assert err.value.status == 502 and err.value.headers["Retry-After"] == "30"


def test_retries_are_bounded(server: WireServer) -> None:
    upstream, sleep = upstream_for(server, max_retries=2)
    server.script(*[openai.error(503)] * 5)
    with pytest.raises(UpstreamError) as err:
        upstream.invoke({"x": 1}, deadline=deadline())
    assert len(server.requests) == 3 and len(sleep.waits) == 2
    assert err.value.code == "upstream_error" and "exploded" not in err.value.message


def test_a_400_is_not_retried(server: WireServer) -> None:
    upstream, sleep = upstream_for(server)
    server.script(openai.error(400))
    with pytest.raises(UpstreamError):
        upstream.invoke({"x": 1}, deadline=deadline())
    assert len(server.requests) == 1 and sleep.waits == []


def test_slow_upstream_times_out_with_504(server: WireServer) -> None:
    upstream, _ = upstream_for(server, timeout_seconds=0.3, max_retries=0)
    # Far later than the 0.3 s timeout: the call ends well before the answer, with room for a loaded machine.
    server.script(Reply.json({"late": True}, delay=6.0))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as err:
        upstream.invoke({"x": 1}, deadline=deadline())
    assert err.value.status == 504 and time.monotonic() - started < 4.0


def test_malformed_json_is_a_502_and_not_retried(server: WireServer) -> None:
    upstream, _ = upstream_for(server)
    server.script(Reply(200, {"Content-Type": "application/json"}, b'{"score": 0.9,'))
    with pytest.raises(UpstreamError) as err:
        upstream.invoke({"x": 1}, deadline=deadline())
    assert err.value.status == 502 and len(server.requests) == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_answer_is_a_502(server: WireServer, chunked: bool) -> None:
    upstream, _ = upstream_for(server, max_response_bytes=1000)
    big = b'{"blob": "' + b"x" * 5000 + b'"}'
    if chunked:  # no Content-Length: the cap holds while reading
        server.script(Reply(200, {"Content-Type": "application/json"}, chunks=[big[:600], big[600:]]))
    else:
        server.script(Reply(200, {"Content-Type": "application/json"}, big))
    with pytest.raises(UpstreamError):
        upstream.invoke({"x": 1}, deadline=deadline())
    assert len(server.requests) == 1


def test_connection_refused_is_retried_then_a_502() -> None:
    clients, sleep = new_clients()
    cfg = config("http", url=f"http://127.0.0.1:{unused_port()}/score", max_retries=1)
    with pytest.raises(UpstreamError) as err:
        build_upstream("legacy", cfg, clients=clients).invoke({"x": 1}, deadline=deadline())
    assert err.value.status == 502 and "127.0.0.1" not in err.value.message
    assert len(sleep.waits) == 1


def test_dropped_connection_is_retried(server: WireServer) -> None:
    upstream, _ = upstream_for(server)
    server.script(Reply(drop=True))
    answer, _ = upstream.invoke({"x": 1}, deadline=deadline())
    assert answer["score"] == 0.9 and len(server.requests) == 2
