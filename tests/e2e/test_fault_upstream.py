"""Upstream faults through the whole local stack: slow → 504, failing / garbage / huge → 502, circuit open → 503,
and every failed call gives its token reservation back.

Given a private stack whose policy points two `openai`-kind models at a scriptable local HTTP server (one with a
circuit breaker that never opens, one that opens after two failures), when the server is told to misbehave, then the
client sees the contract's status, type and code (no upstream text), nothing hangs, and the caller's daily token
counter in the counters table holds exactly the real usage of the successful calls so far: the failed call's
reservation is written back at once, and the unused part of earlier successful reservations (deferred refunds, given
back inside the caller's next admission write) has been applied by the failed call's own admission.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from bulwark.auth.keys import parse_api_key
from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from tests.e2e.fault_fixtures import create_key, private_stack, write_policy

pytestmark = pytest.mark.e2e
HANG_GUARD = 10.0  # seconds; generous: a bounded failure takes about the upstream timeout (1 s) at most
MAX_RESPONSE = 20_000
USAGE = 10  # total_tokens the scripted upstream reports for every successful call


class ScriptedUpstream:
    """An OpenAI-compatible server whose behaviour per model path is set by the test: ok, slow, fail, garbage, huge."""

    def __init__(self) -> None:
        self.modes: dict[str, str] = {}
        self.calls: dict[str, int] = {}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                name = self.path.strip("/").split("/")[0]
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                upstream.calls[name] = upstream.calls.get(name, 0) + 1
                mode = upstream.modes.get(name, "ok")
                if mode == "slow":
                    time.sleep(3)
                    mode = "ok"
                if mode == "fail":
                    self._send(500, b'{"error": {"message": "internal upstream secret detail"}}')
                elif mode == "garbage":
                    self._send(200, b"<html>definitely not json")
                elif mode == "huge":
                    self._send(200, b'{"pad": "' + b"x" * (MAX_RESPONSE * 5) + b'"}')
                else:
                    body = {
                        "id": "up-1",
                        "object": "chat.completion",
                        "created": 1,
                        "model": request.get("model", ""),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": USAGE},
                    }
                    self._send(200, json.dumps(body).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the invoker gave up first (timeout, size cap): that is the point

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, model: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{model}/v1"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    upstream.thread.start()
    yield upstream
    upstream.server.shutdown()
    upstream.server.server_close()


@pytest.fixture(scope="module")
def stack(
    scripted: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory, shared_dynamodb: DynamoDBLocal
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fault-upstream")

    def model(name: str, threshold: int) -> dict[str, Any]:
        return {
            "upstream": {
                "kind": "openai",
                "url": scripted.url(name),
                "timeout_seconds": 1,
                "max_retries": 0,
                "max_response_bytes": MAX_RESPONSE,
                "circuit_failure_threshold": threshold,
                "circuit_reset_seconds": 300,
            }
        }

    policy = write_policy(
        Path(tmp),
        models={"scripted": model("scripted", 1000), "breaker": model("breaker", 2)},
        default_model="scripted",
    )
    with private_stack(Path(tmp), policy, dynamodb=shared_dynamodb) as (local, lines):
        env = local.cli_environment()
        key = create_key(env, role="developer", name="fault-upstream")
        parsed = parse_api_key(key)
        assert parsed is not None
        yield {
            "base_url": local.base_url,
            "key": key,
            "principal": f"key:{parsed.key_id}",
            "ddb": local.dynamodb_client(),
            "counters": local.table_names["CountersTable"],
            "lines": lines,
            "successes": 0,
        }


def chat(stack: dict[str, Any], model: str) -> tuple[requests.Response, float]:
    body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "Say something."}]}
    started = time.monotonic()
    resp = requests.post(
        f"{stack['base_url']}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {stack['key']}"},
        timeout=30,
    )
    elapsed = time.monotonic() - started
    if resp.status_code == 200:
        stack["successes"] += 1
    return resp, elapsed


def real_usage(stack: dict[str, Any]) -> int:
    return USAGE * int(stack["successes"])


def day_used(stack: dict[str, Any]) -> int:
    item = stack["ddb"].get_item(
        TableName=stack["counters"], Key={"pk": {"S": "lim#" + stack["principal"]}}, ConsistentRead=True
    )["Item"]
    return int(item["day_used"]["N"])


def assert_error(resp: requests.Response, status: int, error_type: str, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert "secret" not in resp.text and "127.0.0.1" not in resp.text  # no upstream text, no upstream URL
    assert resp.headers.get("x-request-id")
    return error


@pytest.fixture
def warm(stack: dict[str, Any], scripted: ScriptedUpstream) -> None:
    """One good call first, so the counter item exists and a deferred refund is pending."""
    scripted.modes["scripted"] = "ok"
    resp, _ = chat(stack, "scripted")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("mode", "status", "error_type", "code"),
    [
        ("slow", 504, "upstream_error", "upstream_timeout"),
        ("fail", 502, "upstream_error", "upstream_error"),
        ("garbage", 502, "upstream_error", "upstream_error"),
        ("huge", 502, "upstream_error", "upstream_error"),
    ],
)
def test_upstream_fault_is_a_bounded_contract_error_and_gives_the_reservation_back(
    stack: dict[str, Any], scripted: ScriptedUpstream, warm: None, mode: str, status: int, error_type: str, code: str
) -> None:
    scripted.modes["scripted"] = mode
    try:
        resp, elapsed = chat(stack, "scripted")
    finally:
        scripted.modes["scripted"] = "ok"
    assert elapsed < HANG_GUARD
    assert_error(resp, status, error_type, code)
    assert day_used(stack) == real_usage(stack), "a failed upstream call must give back every token it reserved"
    # And the next call goes through; its unused reservation comes back with the next admission (or a flush).
    resp, _ = chat(stack, "scripted")
    assert resp.status_code == 200, resp.text
    assert real_usage(stack) <= day_used(stack)


def test_circuit_opens_after_consecutive_failures_and_answers_503_with_retry_after(
    stack: dict[str, Any], scripted: ScriptedUpstream, warm: None
) -> None:
    scripted.modes["breaker"] = "fail"
    for _ in range(2):
        resp, elapsed = chat(stack, "breaker")
        assert elapsed < HANG_GUARD
        assert_error(resp, 502, "upstream_error", "upstream_error")
    calls = scripted.calls.get("breaker", 0)
    resp, elapsed = chat(stack, "breaker")
    assert elapsed < HANG_GUARD
    assert_error(resp, 503, "service_unavailable", "upstream_circuit_open")
    assert int(resp.headers["Retry-After"]) >= 1
    assert scripted.calls.get("breaker", 0) == calls, "an open circuit must not call the upstream"
    assert day_used(stack) == real_usage(stack), "refused and failed calls consume no tokens"
    # The other model's circuit is its own: it still answers.
    resp, _ = chat(stack, "scripted")
    assert resp.status_code == 200, resp.text
