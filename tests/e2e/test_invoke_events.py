"""`bulwark invoke FUNCTION --event FILE` (issue 15 item 6): every file in events/ through the running local stack.

Each event runs in one of the stack's execution environments with the template's environment; the answer printed is
the handler's response as `sam local invoke` prints it, and the invocation's own log lines (START ... REPORT) come
with it. Every event file must have an expectation here, so a new one cannot go untested.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bulwark_dev.cli import main
from tests.e2e.conftest import ROOT

EVENTS = sorted((ROOT / "events").glob("*.json"))


def _unauthorized(result: dict[str, Any]) -> None:
    # The documented way for a Lambda authorizer to make API Gateway answer 401: raise "Unauthorized".
    assert result["function_error"] == "Unhandled"
    assert result["payload"]["errorMessage"] == "Unauthorized"


def _proxy(status: int, content_type: str = "application/json") -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(result: dict[str, Any]) -> dict[str, Any]:
        assert result["function_error"] is None
        payload: dict[str, Any] = result["payload"]
        assert payload["statusCode"] == status, payload
        assert payload["headers"]["Content-Type"] == content_type
        assert payload["headers"]["x-request-id"]
        return payload

    return check


def _chat(result: dict[str, Any]) -> None:
    body = json.loads(_proxy(200)(result)["body"])
    assert body["object"] == "chat.completion" and "Say hello." in body["choices"][0]["message"]["content"]


def _stream(result: dict[str, Any]) -> None:
    body = _proxy(200, "text/event-stream")(result)["body"]
    assert body.startswith("data: ") and body.rstrip().endswith("data: [DONE]")


def _invoke_model(result: dict[str, Any]) -> None:
    # demo-echo is a chat model with no JSON Schema for the generic route: refused as a model the caller may not use.
    error = json.loads(_proxy(403)(result)["body"])["error"]
    assert (error["type"], error["code"]) == ("permission_error", "model_not_allowed")


def _models(result: dict[str, Any]) -> None:
    body = json.loads(_proxy(200)(result)["body"])
    assert body["object"] == "list" and "demo-echo" in [m["id"] for m in body["data"]]


def _invoker(result: dict[str, Any]) -> None:
    # The event is a validator request without the validator's MAC: the invoker refuses it, as it would in AWS
    # (only the validator can get a model called, tests/e2e/test_invoker_trust_e2e.py).
    assert result["function_error"] is None and result["payload"]["ok"] is False
    assert result["payload"]["error"]["error_class"] == "PermissionDenied"


def _janitor(result: dict[str, Any]) -> None:
    assert result["function_error"] is None
    assert set(result["payload"]) == {"disabled", "expiring_soon"}


EXPECTED: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "authorizer_request.json": ("AuthorizerFunction", _unauthorized),  # an example key, not in this stack's store
    "authorizer_request_no_credential.json": ("AuthorizerFunction", _unauthorized),
    "authorizer_request_x_api_key.json": ("AuthorizerFunction", _unauthorized),
    "invoker_chat.json": ("InvokerFunction", _invoker),
    "janitor_schedule.json": ("JanitorFunction", _janitor),
    "validator_chat_completions.json": ("ValidatorFunction", _chat),
    "validator_chat_completions_stream.json": ("ValidatorFunction", _stream),
    "validator_invoke_model.json": ("ValidatorFunction", _invoke_model),
    "validator_list_models.json": ("ValidatorFunction", _models),
}


@pytest.mark.parametrize("event", EVENTS, ids=[path.name for path in EVENTS])
def test_every_event_file_runs_through_bulwark_invoke(
    event: Path, local_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert event.name in EXPECTED, f"events/{event.name} has no expectation in this test"
    function, check = EXPECTED[event.name]
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    state_dir = str(local_stack.stack.state_dir)
    code = main(["invoke", function, "--event", str(event), "--state-dir", state_dir, "--json"], out=out)
    result = json.loads(out.getvalue())
    assert code == (1 if result["function_error"] else 0)
    check(result)
    # The invocation's own lines, from its environment's log stream: START first, REPORT last, one request id.
    logs = result["logs"]
    assert logs[0] == f"START RequestId: {result['request_id']} Version: $LATEST"
    assert logs[-1].startswith(f"REPORT RequestId: {result['request_id']}\tDuration: ")
    assert result["log_stream"] and "[$LATEST]" in result["log_stream"]


def test_invoke_prints_the_payload_alone_on_stdout_as_sam_does(
    local_stack: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    event = str(ROOT / "events" / "validator_list_models.json")
    code = main(["invoke", "ValidatorFunction", "-e", event, "--state-dir", str(local_stack.stack.state_dir)], out=out)
    assert code == 0
    assert json.loads(out.getvalue())["statusCode"] == 200  # stdout: the payload, nothing else
    assert "REPORT RequestId: " in capsys.readouterr().err  # the logs go to stderr


def test_invoke_names_the_functions_when_one_is_unknown(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["invoke", "NoSuchFunction"], out=io.StringIO()) == 2
    assert "ValidatorFunction" in capsys.readouterr().err
