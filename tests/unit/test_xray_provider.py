"""The lean X-Ray provider behind Powertools Tracer: what reaches the daemon (UDP) for a sampled invocation.

Given Lambda's trace header, the handler's subsegment hangs off Lambda's segment, nested subsegments (an AWS call)
off the handler's, exceptions mark a fault with a redacted message, and nothing at all is sent when not sampled.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Tracer

from bulwark.aws.xray import LambdaXRayProvider, Subsegment
from bulwark.observability.tracing import trace_with

ROOT = "1-6745e1a2-5f1d3c0e8a7b9c2d4e6f8a0b"
PARENT = "53995c3f42cd8ad8"


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


@pytest.fixture(autouse=True)
def _fresh_tracer_config() -> Iterator[None]:
    Tracer._reset_config()  # type: ignore[no-untyped-call]  # one provider per process: tests must not leak theirs
    yield
    Tracer._reset_config()  # type: ignore[no-untyped-call]
    trace_with(None)


def _documents(sock: socket.socket) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return docs
        header, _, body = data.partition(b"\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        docs.append(json.loads(body))


def _tracer(sock: socket.socket) -> Tracer:
    port = sock.getsockname()[1]
    return Tracer(
        service="bulwark-test", disabled=False, auto_patch=False, provider=LambdaXRayProvider(f"127.0.0.1:{port}")
    )


def test_a_sampled_invocation_sends_the_handler_and_nested_subsegments(
    daemon: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={ROOT};Parent={PARENT};Sampled=1")
    tracer = _tracer(daemon)

    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        tracer.put_annotation("route", "chat")
        with tracer.provider.in_subsegment(name="DynamoDB") as sub:
            assert isinstance(sub, Subsegment)  # the lean provider's own subsegment, not the SDK's
            sub.namespace = "aws"
            sub.set_aws({"operation": "UpdateItem", "region": "eu-west-1"})
        return {"ok": True}

    assert handler({}, None) == {"ok": True}
    docs = {d["name"]: d for d in _documents(daemon)}
    outer, inner = docs["## handler"], docs["DynamoDB"]
    assert outer["trace_id"] == ROOT and outer["parent_id"] == PARENT and outer["type"] == "subsegment"
    assert outer["annotations"]["route"] == "chat" and outer["annotations"]["ColdStart"] in (True, False)
    assert inner["parent_id"] == outer["id"] and inner["trace_id"] == ROOT
    assert inner["namespace"] == "aws" and inner["aws"] == {"operation": "UpdateItem", "region": "eu-west-1"}
    assert outer["start_time"] <= inner["start_time"] <= inner["end_time"] <= outer["end_time"]


def test_an_exception_is_a_fault_without_secrets(daemon: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={ROOT};Parent={PARENT};Sampled=1")
    tracer = _tracer(daemon)
    leaked = "bwk_AbCdEfGhIjKl_" + "x" * 43 + "AAAAAA"

    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError(f"bad key {leaked}")

    with pytest.raises(RuntimeError):
        handler({}, None)
    (doc,) = _documents(daemon)
    assert doc["fault"] is True and doc["cause"]["exceptions"][0]["type"] == "RuntimeError"
    assert leaked not in json.dumps(doc)


def test_nothing_is_sent_when_lambda_did_not_sample(daemon: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={ROOT};Parent={PARENT};Sampled=0")
    tracer = _tracer(daemon)

    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: Any) -> str:
        return "ok"

    assert handler({}, None) == "ok"
    assert _documents(daemon) == []


def test_a_daemon_address_in_lambda_format_is_understood() -> None:
    provider = LambdaXRayProvider("tcp:169.254.79.129:2000 udp:169.254.79.129:2000")
    assert provider.daemon == ("169.254.79.129", 2000)
