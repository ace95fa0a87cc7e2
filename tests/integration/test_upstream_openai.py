"""The OpenAI-compatible and demo adapters against real HTTP servers (wire/openai.py, bulwark_dev.local.demo_model)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from bulwark.errors import UpstreamError
from bulwark.upstreams import build_upstream
from bulwark.upstreams.demo import DEMO_URL_ENV
from bulwark_dev.local.demo_model import ECHO_PREFIX, serve_demo_model
from tests.integration.wire import openai, secretsmanager
from tests.integration.wire.fixtures import config, deadline, new_clients, use_aws_env
from tests.integration.wire.server import Reply, WireServer

REQUEST = {
    "model": "chat-small",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there world"}],
    "max_tokens": 50,
}


@pytest.fixture
def server() -> Iterator[WireServer]:
    srv = openai.start()
    yield srv
    srv.stop()


def test_chat_answer_is_rebuilt_with_our_model_name_and_upstream_usage(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an OpenAI-compatible upstream whose key is in an env var
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-secret")
    clients, _ = new_clients()
    cfg = config("openai", url=server.url + "/v1", model_id="internal-model-v7", api_key_env="UPSTREAM_KEY")
    upstream = build_upstream("chat-small", cfg, clients=clients)

    # When
    result = upstream.chat(REQUEST, deadline=deadline())

    # Then the client sees our model name and id, not the upstream's, and the upstream's own usage
    assert result.body["model"] == "chat-small"
    assert result.body["id"].startswith("chatcmpl-") and "internal" not in result.body["id"]
    assert "system_fingerprint" not in result.body
    assert result.body["choices"][0]["message"] == {"role": "assistant", "content": ECHO_PREFIX + "hello there world"}
    assert result.usage.estimated is False and result.usage.prompt_tokens == 5
    # And the upstream saw only our headers and its own model id
    seen = server.requests[-1]
    assert seen.headers["authorization"] == "Bearer sk-upstream-secret"
    assert {"x-api-key", "cookie", "x-forwarded-for"}.isdisjoint(seen.headers)
    assert seen.json()["model"] == "internal-model-v7"


def test_usage_is_estimated_when_the_upstream_reports_none(server: WireServer) -> None:
    clients, _ = new_clients()
    text, prompt, completion_tokens = "four words of answer", 3, 4
    server.script(Reply.json(openai.completion(text, prompt, completion_tokens, usage=False)))
    upstream = build_upstream("m", config("openai", url=server.url + "/v1"), clients=clients)

    result = upstream.chat(REQUEST, deadline=deadline())

    assert result.usage.estimated is True
    assert result.usage.completion_tokens >= 4
    assert result.body["usage"]["total_tokens"] == result.usage.total_tokens


def test_api_key_comes_from_secrets_manager_once_per_ttl(server: WireServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the key in Secrets Manager (JSON 1.1 wire server; boto3 signs with dummy credentials)
    use_aws_env(monkeypatch)
    secrets = secretsmanager.make({"bulwark/upstream/chat": json.dumps({"api_key": "sk-from-secret"})})
    import boto3

    try:
        sm = boto3.client("secretsmanager", endpoint_url=secrets.url, region_name="us-east-1")
        clients, _ = new_clients(secretsmanager=sm)
        cfg = config("openai", url=server.url + "/v1", api_key_secret="bulwark/upstream/chat")
        upstream = build_upstream("m", cfg, clients=clients)

        # When two requests go through
        upstream.chat(REQUEST, deadline=deadline())
        upstream.chat(REQUEST, deadline=deadline())

        # Then the secret was read once and used as the bearer token
        assert [r.headers["x-amz-target"] for r in secrets.requests] == ["secretsmanager.GetSecretValue"]
        assert server.requests[-1].headers["authorization"] == "Bearer sk-from-secret"
    finally:
        secrets.stop()


def test_a_missing_secret_fails_closed_without_calling_the_upstream(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_aws_env(monkeypatch)
    secrets = secretsmanager.make({})
    import boto3

    try:
        sm = boto3.client("secretsmanager", endpoint_url=secrets.url, region_name="us-east-1")
        clients, _ = new_clients(secretsmanager=sm)
        cfg = config("openai", url=server.url + "/v1", api_key_secret="bulwark/upstream/nope")
        with pytest.raises(UpstreamError) as err:
            build_upstream("m", cfg, clients=clients).chat(REQUEST, deadline=deadline())
        assert err.value.status == 502
        assert server.requests == []
    finally:
        secrets.stop()


def test_upstream_401_is_a_502_and_drops_the_cached_secret(server: WireServer) -> None:
    class FakeSecrets:
        calls = 0

        def get_secret_value(self, SecretId: str) -> dict[str, str]:  # noqa: N803 - the SDK name
            FakeSecrets.calls += 1
            return {"SecretString": f"sk-{FakeSecrets.calls}"}

    clients, _ = new_clients(secretsmanager=FakeSecrets())
    upstream = build_upstream(
        "m", config("openai", url=server.url + "/v1", api_key_secret="bulwark/upstream/s"), clients=clients
    )
    server.script(openai.error(401))

    with pytest.raises(UpstreamError) as err:
        upstream.chat(REQUEST, deadline=deadline())
    assert err.value.status == 502 and "exploded" not in err.value.message
    upstream.chat(REQUEST, deadline=deadline())
    assert server.requests[-1].headers["authorization"] == "Bearer sk-2"  # re-read after the 401


def test_stream_yields_chunks_then_a_usage_chunk(server: WireServer) -> None:
    clients, _ = new_clients()
    upstream = build_upstream("chat-small", config("openai", url=server.url + "/v1"), clients=clients)

    stream = upstream.chat_stream({**REQUEST, "stream": True}, deadline=deadline())
    chunks = list(stream)

    # The upstream is always asked for usage, whatever the client asked
    assert server.requests[-1].json()["stream_options"] == {"include_usage": True}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "chat-small" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == (ECHO_PREFIX + "hello there world").replace(" ", "")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 5
    assert stream.usage is not None and stream.usage.estimated is False


def test_connections_are_kept_alive_across_calls_and_streams(server: WireServer) -> None:
    clients, _ = new_clients()
    upstream = build_upstream("m", config("openai", url=server.url + "/v1"), clients=clients)
    upstream.chat(REQUEST, deadline=deadline())
    list(upstream.chat_stream(REQUEST, deadline=deadline()))
    list(upstream.chat_stream(REQUEST, deadline=deadline()))
    upstream.chat(REQUEST, deadline=deadline())
    assert len({r.client_port for r in server.requests}) == 1


def test_stream_without_upstream_usage_is_estimated(server: WireServer) -> None:
    clients, _ = new_clients()
    chunks = openai.stream_chunks("a b c", 1, 3, usage=False)
    server.script(Reply(200, {"Content-Type": "text/event-stream"}, chunks=openai.sse(chunks)))
    upstream = build_upstream("m", config("openai", url=server.url + "/v1"), clients=clients)

    stream = upstream.chat_stream(REQUEST, deadline=deadline())
    out = list(stream)

    assert stream.usage is not None and stream.usage.estimated is True
    assert out[-1]["usage"]["completion_tokens"] == stream.usage.completion_tokens


def test_stream_that_breaks_mid_way_raises_upstream_error(server: WireServer) -> None:
    clients, _ = new_clients()
    chunks = openai.sse(openai.stream_chunks("a b c", 1, 3, usage=False), done=False)
    server.script(Reply(200, {"Content-Type": "text/event-stream"}, chunks=[*chunks[:2], b"data: {not json\n\n"]))
    upstream = build_upstream("m", config("openai", url=server.url + "/v1"), clients=clients)

    stream = upstream.chat_stream(REQUEST, deadline=deadline())
    with pytest.raises(UpstreamError):
        list(stream)


def test_stream_errors_before_the_first_byte_are_raised_by_chat_stream(server: WireServer) -> None:
    clients, _ = new_clients()
    server.script(openai.error(503), openai.error(503), openai.error(503))
    upstream = build_upstream("m", config("openai", url=server.url + "/v1", max_retries=2), clients=clients)

    with pytest.raises(UpstreamError):
        upstream.chat_stream(REQUEST, deadline=deadline())
    assert len(server.requests) == 3


def test_demo_adapter_against_the_demo_model_server(monkeypatch: pytest.MonkeyPatch) -> None:
    demo, thread = serve_demo_model()
    try:
        monkeypatch.setenv(DEMO_URL_ENV, demo.base_url)
        clients, _ = new_clients()
        upstream = build_upstream("demo-echo", config("demo"), clients=clients)

        result = upstream.chat(REQUEST, deadline=deadline())
        stream = upstream.chat_stream(REQUEST, deadline=deadline())
        chunks = list(stream)

        assert result.body["choices"][0]["message"]["content"] == ECHO_PREFIX + "hello there world"
        assert result.usage == stream.usage
        assert chunks[-1]["usage"]["completion_tokens"] == result.usage.completion_tokens
        with urllib.request.urlopen(demo.base_url.removesuffix("/v1") + "/__demo/last-request") as resp:
            last = json.loads(resp.read())["body"]
        assert last["model"] == "demo-echo" and last["stream"] is True
        with urllib.request.urlopen(demo.base_url + "/models") as resp:
            assert json.loads(resp.read())["data"][0]["id"] == "demo-echo"
    finally:
        demo.shutdown()
        demo.server_close()
        thread.join(timeout=5)
