"""Every line a request causes carries its request id: log lines and EMF metric lines, in every function it reaches.

Requests that take different paths go through the local stack (allowed and answered, refused by the authorizer, refused
by the validator); then every line the functions wrote meanwhile is read. Each must be JSON (a warning or a print could
never carry an id), name its invocation (`function_request_id`) and carry the API Gateway request id of one of the
requests sent (`correlation_id`, the id the caller gets back as `x-request-id`), and every request must be found on log
lines and on EMF lines alike.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.audit_session import create_key, post_chat

pytestmark = pytest.mark.e2e

GATEWAY_PREFIX = "[api-gateway] "
PLATFORM_LINE = re.compile(r"(?:START|END|REPORT) RequestId: ([0-9a-f-]+)")


def _function_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(function name, line) for every line a Lambda worker wrote (the gateway's own lines are the emulator's)."""
    out = []
    for line in lines:
        if not line.startswith("[") or line.startswith(GATEWAY_PREFIX):
            continue
        name, _, rest = line.partition("] ")
        out.append((name[1:], rest))
    return out


def _wait_for_gateway_lines(local_stack: Any, request_ids: set[str], timeout: float = 15.0) -> None:
    """Workers' lines reach the capture asynchronously; the gateway logs a request once its response is complete."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {
            rid
            for line in local_stack.log_lines
            if line.startswith(GATEWAY_PREFIX)
            for rid in request_ids
            if rid in line
        }
        if seen == request_ids:
            time.sleep(0.5)  # let the workers' pipes drain their last lines
            return
        assert time.monotonic() < deadline, f"gateway lines missing for {request_ids - seen}"
        time.sleep(0.05)


def test_every_line_of_a_request_carries_its_request_id(local_stack: Any) -> None:
    # Given a key and requests along different paths
    key = create_key(local_stack.env, "request-ids-e2e")["api_key"]
    start = len(local_stack.log_lines)

    # When they are sent: answered (validator, invoker, model), refused by the authorizer, refused by the validator
    answered = post_chat(local_stack.base_url, {"x-api-key": key}, "hello")
    refused = post_chat(local_stack.base_url, {"x-api-key": key[:-3] + "zzz"}, "hello")
    malformed = post_chat(local_stack.base_url, {"x-api-key": key}, "", body='{"model": "demo-echo", "messages": 7}')
    assert (answered.status_code, refused.status_code, malformed.status_code) == (200, 401, 400)
    request_ids = {r.headers["x-request-id"] for r in (answered, refused, malformed)}
    assert len(request_ids) == 3
    _wait_for_gateway_lines(local_stack, request_ids)

    # Then every line a function's code wrote meanwhile names its invocation and one of the requests. The runtime's
    # own lines (START/END/REPORT, the emulator's platform records, the error record of a handler that raised: the
    # authorizer raises Unauthorized to have API Gateway answer 401) name the invocation, as on Lambda, and join
    # through it; INIT_START belongs to an environment, not a request.
    own: list[tuple[str, dict[str, Any]]] = []
    runtime: list[tuple[str, str]] = []
    for function, line in _function_lines(local_stack.log_lines[start:]):
        if line.startswith("INIT_START "):
            continue
        platform = PLATFORM_LINE.match(line)
        if platform:
            runtime.append((function, platform.group(1)))
            continue
        record = json.loads(line)  # a non-JSON line (a warning, a print) could never carry an id
        if record.get("type") == "platform" or {"errorType", "requestId"} <= record.keys():
            runtime.append((function, record.get("requestId", "")))
        else:
            own.append((function, record))
    by_request: dict[str, list[dict[str, Any]]] = {rid: [] for rid in request_ids}
    functions: dict[str, set[str]] = {rid: set() for rid in request_ids}
    invocations: dict[str, str] = {}
    for function, record in own:
        assert record.get("function_request_id"), (function, record)
        assert record.get("correlation_id") in request_ids, (function, record)
        by_request[record["correlation_id"]].append(record)
        functions[record["correlation_id"]].add(function)
        invocations[record["function_request_id"]] = record["correlation_id"]
    for function, invocation in runtime:
        assert invocation in invocations, (function, invocation)

    # And each request is found on its log lines and its metric lines alike, in each function it reached
    def emf(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if "_aws" in r]

    answered_id = answered.headers["x-request-id"]
    assert {f.rsplit("-", 1)[-1] for f in functions[answered_id]} >= {
        "AuthorizerFunction",
        "ValidatorFunction",
        "InvokerFunction",
    }
    assert {r["service"] for r in emf(by_request[answered_id])} >= {"bulwark-validator", "bulwark-invoker"}
    refused_emf = emf(by_request[refused.headers["x-request-id"]])
    assert any(r.get("reason") for r in refused_emf), refused_emf  # the dimensioned count (AuthFailures by reason)
    for rid in request_ids:
        assert any("_aws" not in r for r in by_request[rid]), f"no log line for {rid}"
        assert emf(by_request[rid]), f"no EMF line for {rid}"
