"""Lambda's execution model in the local stack, with tiny handlers and a tiny template written here.

Covers: one invocation at a time per execution environment (a process each), a burst starting exactly the
environments it needs and never more than the reserved concurrency, 429 TooManyRequestsException at once beyond it
(never queued), warm reuse, recycling after the idle time (a cold start again), an environment discarded after a
timeout, log streams named as Lambda names them with START/END/REPORT (Init Duration on a cold start only), and the
regression behind issue 20: Powertools' logger keys and metric set are per process, so invocations sharing a process
(the old threaded worker) crossed correlation ids and raised on flush; one invocation per environment cannot.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulwark.observability.audit import audit_of, verify
from bulwark_dev.audit_cli import check_streams
from bulwark_dev.local.environments import FunctionPool
from bulwark_dev.local.stack import FunctionFleet, LogSink
from bulwark_dev.local.template_model import load_template

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.13
    Timeout: 5
    MemorySize: 128
    Environment:
      Variables:
        POWERTOOLS_SERVICE_NAME: envtest
        POWERTOOLS_METRICS_NAMESPACE: EnvTest
Resources:
  SlowFn:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: slow/, Handler: app.handler, Timeout: 1, ReservedConcurrentExecutions: 3}
  PtFn:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: pt/, Handler: app.handler, Timeout: 2, ReservedConcurrentExecutions: 8}
"""

SLOW = """
import os, time

def handler(event, context):
    time.sleep(float(event.get("sleep", 0)))
    return {"request_id": context.aws_request_id, "stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
            "pid": os.getpid(), "n": event.get("n")}
"""

# The shape of the real handlers: Powertools logger with the correlation id, metrics flushed by the decorator, one
# audit record per invocation written through the product's own emit_audit.
POWERTOOLS = """
import time

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from bulwark.observability.audit import emit_audit

logger = Logger()
metrics = Metrics()

@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event, context):
    request_id = event["requestContext"]["requestId"]
    time.sleep(float(event.get("before", 0)))  # a timeout here is a timeout before the record
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    time.sleep(0.05)  # what a model call does: leaves time for another invocation to run in between
    emit_audit(logger, {"request_id": request_id, "status": 200}, every_invocation=True)
    time.sleep(float(event.get("after", 0)))  # a timeout here is a timeout after the record
    return {"request_id": request_id}
"""

STREAM_NAME = re.compile(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}\Z")


class Harness:
    def __init__(self, root: Path) -> None:
        for folder, source in (("slow", SLOW), ("pt", POWERTOOLS)):
            (root / folder).mkdir()
            (root / folder / "app.py").write_text(textwrap.dedent(source))
        (root / "template.yaml").write_text(TEMPLATE)
        self.log_path = root / "log.jsonl"
        self.sink = LogSink(None, self.log_path)
        self.fleet = FunctionFleet(load_template(root / "template.yaml"), on_line=self.sink.line)
        self.fleet.start()

    def pool(self, logical_id: str) -> FunctionPool:
        return self.fleet.pools[logical_id]

    def invoke(self, logical_id: str, event: dict[str, Any], timeout: float = 20.0) -> tuple[int, Any, str | None]:
        result = self.fleet.invoke(logical_id, json.dumps(event).encode(), timeout)
        return result.status, json.loads(result.payload) if result.payload else None, result.error_type

    def records(
        self, until: Callable[[list[dict[str, Any]]], bool] | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The log's records once the pipes' pump threads have written the last lines: after 0.3 s, or as soon as
        `until` holds (polled: a busy machine can take longer to write a line than an idle one)."""
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(0.3 if until is None else 0.05)
            found = [json.loads(line) for line in self.log_path.read_text().splitlines()]
            if until is None or until(found) or time.monotonic() > deadline:
                return found

    def stop(self) -> None:
        self.fleet.stop()
        self.sink.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("environments"))
    try:
        yield harness
    finally:
        harness.stop()


def _burst(harness: Harness, logical_id: str, events: list[dict[str, Any]]) -> list[tuple[int, Any, str | None]]:
    barrier = threading.Barrier(len(events))

    def one(event: dict[str, Any]) -> tuple[int, Any, str | None]:
        barrier.wait()
        return harness.invoke(logical_id, event)

    with concurrent.futures.ThreadPoolExecutor(len(events)) as pool:
        return list(pool.map(one, events))


def test_a_burst_starts_the_environments_it_needs_and_each_runs_one_invocation(harness: Harness) -> None:
    pool = harness.pool("SlowFn")
    started_before = pool.stats.started
    results = _burst(harness, "SlowFn", [{"sleep": 0.4, "n": n} for n in range(3)])
    assert [status for status, _, _ in results] == [200, 200, 200]
    answers = [payload for _, payload, _ in results]
    assert sorted(a["n"] for a in answers) == [0, 1, 2]  # every answer is its own request's
    assert len({a["pid"] for a in answers}) == 3  # three invocations at once: three environments (processes)
    assert len({a["stream"] for a in answers}) == 3 and all(STREAM_NAME.match(a["stream"]) for a in answers)
    # The fleet warmed one environment at start; the burst of 3 started 2 more, and never more than reserved.
    assert pool.stats.started - started_before == 2
    assert pool.stats.peak_in_flight == 3 <= pool.capacity == 3
    assert len(pool.environments()) == 3


def test_a_burst_beyond_reserved_concurrency_is_throttled_at_once(harness: Harness) -> None:
    started = time.monotonic()
    results = _burst(harness, "SlowFn", [{"sleep": 0.8, "n": n} for n in range(6)])
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 200, 429, 429, 429]
    throttled = [payload for status, payload, _ in results if status == 429]
    assert {error for status, _, error in results if status == 429} == {"TooManyRequestsException"}
    assert all(p["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded" for p in throttled)
    assert time.monotonic() - started < 5  # answered, not queued behind the running ones
    assert harness.pool("SlowFn").stats.throttled >= 3


def test_idle_environments_are_reused_then_recycled_for_a_cold_start(harness: Harness) -> None:
    pool = harness.pool("SlowFn")
    _, first, _ = harness.invoke("SlowFn", {"n": "a"})
    _, second, _ = harness.invoke("SlowFn", {"n": "b"})
    assert first["stream"] == second["stream"]  # warm: the most recently used environment again
    pool.idle_timeout = 0.3
    try:
        deadline = time.monotonic() + 10
        while pool.environments() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pool.environments()  # all recycled by the reaper
        _, cold, _ = harness.invoke("SlowFn", {"n": "c"})
    finally:
        pool.idle_timeout = 300.0
    assert cold["stream"] != second["stream"] and cold["pid"] != second["pid"]
    reports = [
        r for r in harness.records() if r.get("platform") == "REPORT" and r.get("requestId") == cold["request_id"]
    ]
    assert len(reports) == 1 and reports[0]["init_duration"] > 0 and reports[0]["log_stream"] == cold["stream"]


def test_platform_lines_carry_the_request_id_in_their_environments_stream(harness: Harness) -> None:
    _, answer, _ = harness.invoke("SlowFn", {"n": "p"})
    records = [r for r in harness.records() if r.get("log_stream") == answer["stream"]]
    kinds = [r["platform"] for r in records if r.get("requestId") == answer["request_id"]]
    assert kinds == ["START", "END", "REPORT"]
    start = next(r for r in records if r.get("platform") == "START" and r["requestId"] == answer["request_id"])
    assert start["message"] == f"START RequestId: {answer['request_id']} Version: $LATEST"
    # Init Duration only on the first REPORT of a stream: one cold start per environment.
    per_stream: dict[str, list[bool]] = {}
    for r in harness.records():
        if r.get("platform") == "REPORT" and r.get("function_name") == "bulwark-local-SlowFn":
            per_stream.setdefault(r["log_stream"], []).append("init_duration" in r)
    assert per_stream and all(flags[0] and not any(flags[1:]) for flags in per_stream.values())


def test_a_timed_out_invocation_discards_its_environment(harness: Harness) -> None:
    pool = harness.pool("SlowFn")
    status, payload, _ = harness.invoke("SlowFn", {"sleep": 3, "n": "t"})
    assert status == 200 and payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in payload["errorMessage"]
    _, after, _ = harness.invoke("SlowFn", {"n": "after"})

    def timeout_reports(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r.get("platform") == "REPORT" and r.get("status") == "timeout"]

    timed_out = timeout_reports(harness.records(until=lambda records: bool(timeout_reports(records))))
    assert timed_out, "the REPORT of a timed-out invocation says so"
    assert after["stream"] not in {r["log_stream"] for r in timed_out}  # a fresh environment, not the timed-out one
    assert pool.stats.discarded >= 1


def test_powertools_state_is_per_environment_no_crossed_ids_no_flush_errors(harness: Harness) -> None:
    """Issue 20's RuntimeError: under the old worker (16 threads in one process) the decorator's metric flush raised
    after another invocation cleared the shared metric set (SchemaValidationError: 'Must contain at least one
    metric'), after the audit record was written; and the logger's correlation_id key, process-wide, was another
    request's. Eight at once here, so the old worker would have run them on shared state."""
    events = [{"requestContext": {"requestId": f"req-{n:02d}"}} for n in range(8)]
    results = _burst(harness, "PtFn", events)
    assert [(status, error) for status, _, error in results] == [(200, None)] * 8
    assert all("errorType" not in payload for _, payload, _ in results), results
    assert sorted(payload["request_id"] for _, payload, _ in results) == [f"req-{n:02d}" for n in range(8)]
    audit_lines = [
        r for r in harness.records() if audit_of(r) is not None and str(r.get("correlation_id")).startswith("req-")
    ]
    assert len(audit_lines) == 8
    for line in audit_lines:
        assert line["correlation_id"] == line["audit"]["request_id"]


def _pt_records(harness: Harness) -> list[dict[str, Any]]:
    return [r for r in harness.records() if r.get("function_name") == "bulwark-local-PtFn"]


def test_the_audit_chain_survives_what_lambda_does(harness: Harness) -> None:
    """Two environments starting at once, one frozen and thawed between invocations, a timeout before the record
    and one after it: every chain verifies, and each chain's stream says how it ended."""
    pool = harness.pool("PtFn")
    _burst(harness, "PtFn", [{"requestContext": {"requestId": f"two-{n}"}} for n in range(2)])
    pids = [pid for environment in pool.environments() if (pid := environment.process.pid) is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # what Lambda does to an idle environment between invocations
    time.sleep(0.3)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    for n in range(3):
        status, _, _ = harness.invoke("PtFn", {"requestContext": {"requestId": f"thawed-{n}"}})
        assert status == 200
    before = harness.invoke("PtFn", {"requestContext": {"requestId": "timeout-before"}, "before": 3})
    after = harness.invoke("PtFn", {"requestContext": {"requestId": "timeout-after"}, "after": 3})
    assert before[1]["errorType"] == after[1]["errorType"] == "Sandbox.Timedout"

    entries = _pt_records(harness)
    records = [r for e in entries if (r := audit_of(e)) is not None]
    result = verify(records)
    issues, endings = check_streams(entries)
    assert result.ok and not issues, (result.as_dict(), issues)
    assert {r["request_id"] for r in records} >= {"two-0", "two-1", "thawed-0", "thawed-1", "thawed-2", "timeout-after"}
    assert "timeout-before" not in {r["request_id"] for r in records}  # it timed out before writing: no record
    assert len(result.chains) == len({e["log_stream"] for e in entries if audit_of(e) is not None})
    assert sum(1 for end in endings.values() if end["ended"].startswith("timed out")) == 2


def test_verify_tells_a_deleted_last_record_from_a_chain_that_ended(harness: Harness) -> None:
    for n in range(3):
        harness.invoke("PtFn", {"requestContext": {"requestId": f"tail-{n}"}})
    entries = _pt_records(harness)
    assert not check_streams(entries)[0]
    # Remove the last record of the chain that holds "tail-1": "tail-2" ran after it in the same environment, so its
    # removal shows, though the chain's seq numbers alone have no gap.
    last = next(e for e in reversed(entries) if (audit_of(e) or {}).get("request_id") == "tail-2")
    tampered = [e for e in entries if e is not last]
    records = [r for e in tampered if (r := audit_of(e)) is not None]
    assert verify(records).ok  # the chain alone cannot see a record cut from its end
    issues, _ = check_streams(tampered)
    assert [issue.kind for issue in issues] == ["deleted"]
    assert last["function_request_id"] in issues[0].detail


def test_the_validator_answers_a_throttled_invoker_with_429_concurrency_exceeded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product's side of a throttle, on the real wire: the lean Lambda client the validator uses sees the Invoke
    API's 429 TooManyRequestsException and InvokerClient raises the contract's 429, not a 502."""
    from bulwark.aws import clients
    from bulwark.errors import RateLimited
    from bulwark.services.invoker_client import InvokerClient, InvokerRequest

    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", harness.fleet.lambda_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    invoker = InvokerClient(clients.lambda_client(), harness.pool("SlowFn").name)
    request = InvokerRequest(
        request_id="r-throttled",
        principal="key:x",
        role="developer",
        model="demo-echo",
        route="chat",
        payload="{}",
        deadline_epoch_ms=4102444800000,
    )
    busy = threading.Barrier(4)

    def occupy() -> None:
        busy.wait()
        harness.invoke("SlowFn", {"sleep": 0.8})

    threads = [threading.Thread(target=occupy) for _ in range(3)]
    for thread in threads:
        thread.start()
    busy.wait()
    time.sleep(0.3)  # the three environments are running their sleeps
    try:
        with pytest.raises(RateLimited) as refused:
            invoker.invoke(request)
    finally:
        for thread in threads:
            thread.join()
    assert (refused.value.status, refused.value.code) == (429, "concurrency_exceeded")
    assert refused.value.headers["Retry-After"] == "1"


def test_an_asynchronous_invoke_is_accepted_then_run_in_an_environment(harness: Harness) -> None:
    """InvocationType Event: the Invoke API answers 202 at once and an environment runs the event afterwards."""
    import urllib.request

    def slow_runs() -> set[str]:
        return {
            r["requestId"]
            for r in harness.records()
            if r.get("platform") == "REPORT" and r.get("function_name") == "bulwark-local-SlowFn"
        }

    before = slow_runs()
    url = f"{harness.fleet.lambda_endpoint}/2015-03-31/functions/{harness.pool('SlowFn').name}/invocations"
    request = urllib.request.Request(
        url, data=json.dumps({"sleep": 0.5}).encode(), method="POST", headers={"X-Amz-Invocation-Type": "Event"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202 and response.read() == b""
    assert time.monotonic() - started < 0.5  # accepted without waiting for the handler's 0.5 s
    deadline = time.monotonic() + 10
    while not slow_runs() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(slow_runs() - before) == 1  # run once, by an environment, after the 202
