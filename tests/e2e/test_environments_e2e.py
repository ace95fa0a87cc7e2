"""Issue 20's proof, through the whole local stack: Lambda's execution model under a burst.

50 concurrent chat requests: every answer is its own request's (its nonce, its x-request-id, its audit record and log
lines), no 5xx, and each function started exactly the environments the burst needed (never one while another sat
idle) and no more than its reserved concurrency. A burst beyond reserved concurrency is throttled at once, in the
contract's shape: the validator throttled is API Gateway's INTEGRATION_FAILURE (503 capacity_exceeded, from the
template's GatewayResponses), the invoker throttled is the validator's 429 concurrency_exceeded.

Each test starts its own stack: the reserved concurrency comes from template parameters, as a deployment sets it.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bulwark.observability.audit import audit_of, verify
from bulwark_dev.audit_cli import check_streams
from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from bulwark_dev.local.stack import LocalStack
from tests.e2e.conftest import ROOT, LineCapture
from tests.e2e.fault_fixtures import SlowModel, write_policy
from tests.e2e.keys import create_key

BURST = 50
# How long the slow model holds each call, so a burst overlaps at the invoker however slowly a loaded machine brings
# the requests to it (a fast echo let a loaded machine serialize them).
HOLD_SECONDS = 2.0


def _stack(
    state_dir: Path, dynamodb: DynamoDBLocal, overrides: dict[str, str], policy: Path | None = None
) -> LocalStack:
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        state_dir=state_dir,
        policy_file=policy,
        progress=None,
        log_stream=LineCapture(),
        parameter_overrides=overrides,
        dynamodb=dynamodb,
    )
    stack.start()
    return stack


@pytest.fixture
def burst_stack(tmp_path: Path, shared_dynamodb: DynamoDBLocal) -> Iterator[LocalStack]:
    # The template's defaults, except that the invoker may take the whole burst (its default, 25, would throttle).
    stack = _stack(tmp_path, shared_dynamodb, {"InvokerReservedConcurrency": str(BURST)})
    try:
        yield stack
    finally:
        client = stack.dynamodb_client()
        stack.stop()
    # A stack on the shared DynamoDB Local leaves it running, with none of its tables behind.
    assert shared_dynamodb.pid is not None
    assert client.list_tables()["TableNames"] == []


LETTERS_FOR_DIGITS = str.maketrans("0123456789", "ghijklmnop")


@pytest.fixture
def tight_stack(tmp_path: Path, shared_dynamodb: DynamoDBLocal) -> Iterator[LocalStack]:
    slow = SlowModel(HOLD_SECONDS)
    policy = write_policy(
        tmp_path,
        models={
            "slow-echo": {"upstream": {"kind": "openai", "url": slow.url, "timeout_seconds": 10, "max_retries": 0}}
        },
    )
    stack = _stack(
        tmp_path / "state",
        shared_dynamodb,
        {"ValidatorReservedConcurrency": "3", "InvokerReservedConcurrency": "1"},
        policy,
    )
    try:
        yield stack
    finally:
        stack.stop()
        slow.close()


def _fire(stack: LocalStack, key: str, count: int, model: str = "demo-echo") -> list[tuple[str, requests.Response]]:
    barrier = threading.Barrier(count)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def one(n: int) -> tuple[str, requests.Response]:
        # Letters only: a hex uuid can hold a digit run that passes the Luhn check and comes back [REDACTED:CARD].
        nonce = f"nonce-{n}-{uuid.uuid4().hex.translate(LETTERS_FOR_DIGITS)}"
        body = {"model": model, "messages": [{"role": "user", "content": nonce}], "max_tokens": 32}
        barrier.wait()
        return nonce, requests.post(f"{stack.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _log(stack: LocalStack) -> list[dict[str, Any]]:
    time.sleep(0.5)  # the pipes' pump threads write the last lines
    assert stack.log_file is not None
    return [json.loads(line) for line in stack.log_file.read_text().splitlines() if line.startswith("{")]


def test_a_burst_of_50_gets_its_own_answers_and_the_environments_it_needed(burst_stack: LocalStack) -> None:
    # The role's max_concurrent (policy) is below the burst on purpose; this key may take the whole burst.
    key, _ = create_key(burst_stack.cli_environment(), "developer", "--max-concurrent", str(BURST))
    results = _fire(burst_stack, key, BURST)

    assert sorted({r.status_code for _, r in results}) == [200]
    for nonce, response in results:
        assert nonce in response.json()["choices"][0]["message"]["content"]  # its own answer, no one else's
    ids = [r.headers["x-request-id"] for _, r in results]
    assert len(set(ids)) == BURST

    entries = _log(burst_stack)
    audits = [(e, rec) for e in entries if (rec := audit_of(e)) is not None and rec.get("request_id") in ids]
    assert sorted(rec["request_id"] for _, rec in audits) == sorted(ids)  # one record per request, none crossed
    for line, record in audits:
        assert line["correlation_id"] == record["request_id"]  # the line's id is the record's own
        assert record["status"] == 200
    access = {e["requestId"]: e["status"] for e in entries if e.get("type") == "access"}
    assert all(access[rid] == 200 for rid in ids)
    # Each record was written inside its own invocation, in that environment's log stream.
    starts = {(e["log_stream"], e["requestId"]) for e in entries if e.get("platform") == "START"}
    assert all((line["log_stream"], line["function_request_id"]) in starts for line, _ in audits)

    stats = burst_stack.worker_stats()
    for logical_id in ("AuthorizerFunction", "ValidatorFunction", "InvokerFunction"):
        pool = stats[logical_id]
        # Started only when every running environment was busy: as many as the burst's peak, and within the cap.
        assert pool["started"] == pool["peak_concurrency"] <= pool["reserved_concurrency"], (logical_id, pool)
        assert pool["throttled"] == 0
        assert len(set(pool["log_streams"])) == pool["started"]
    assert stats["ValidatorFunction"]["peak_concurrency"] > 1  # the burst was concurrent at the validator


def test_a_burst_beyond_reserved_concurrency_is_throttled_not_queued(tight_stack: LocalStack) -> None:
    key, _ = create_key(tight_stack.cli_environment(), "developer")
    started = time.monotonic()
    results = _fire(tight_stack, key, 16, model="slow-echo")
    assert time.monotonic() - started < 30  # every request answered, none held in a queue

    statuses = [r.status_code for _, r in results]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 1
    for nonce, response in results:
        if response.status_code == 200:
            assert nonce in response.json()["choices"][0]["message"]["content"]
            continue
        error = response.json()["error"]
        assert set(response.json()) == {"error"} and response.headers["Retry-After"] == "1"
        assert response.headers["x-request-id"]
        if response.status_code == 503:  # the validator was throttled: API Gateway's mapped INTEGRATION_FAILURE
            assert (error["type"], error["code"]) == ("service_unavailable", "capacity_exceeded")
        else:  # the invoker was throttled: the validator's answer
            assert (error["type"], error["code"]) == ("rate_limit_error", "concurrency_exceeded")

    # Nothing lost: every request is in the access log; what reached the validator has its audit record; what Lambda
    # throttled before the validator ran is the access log's (with the Invoke API's error), as on AWS.
    entries = _log(tight_stack)
    access = {e["requestId"]: e for e in entries if e.get("type") == "access"}
    records = [rec for e in entries if (rec := audit_of(e)) is not None]
    audited = {rec["request_id"] for rec in records}
    for _, response in results:
        request_id = response.headers["x-request-id"]
        assert access[request_id]["status"] == response.status_code
        if response.status_code == 503:
            assert access[request_id]["integrationError"] == "TooManyRequestsException"
        else:
            assert request_id in audited
    assert verify(records).ok and not check_streams(entries)[0]

    stats = tight_stack.worker_stats()
    assert stats["ValidatorFunction"]["throttled"] == statuses.count(503)
    assert stats["InvokerFunction"]["throttled"] == statuses.count(429)
    assert statuses.count(503) + statuses.count(429) >= 1  # 16 at once against 3 and 1 environments
    assert stats["ValidatorFunction"]["started"] <= 3 and stats["InvokerFunction"]["started"] <= 1
