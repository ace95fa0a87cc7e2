"""`bulwark audit verify --log-group` against a local server speaking the CloudWatch Logs JSON 1.1 wire protocol.

The audit records are written by the real logger (Powertools JSON, redaction, `emit_audit`) and stored as CloudWatch
events, several containers' chains interleaved in each log group; boto3 signs and pages through FilterLogEvents.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bulwark.observability.audit import AuditChain, emit_audit
from bulwark.observability.logs import make_logger
from bulwark_dev.cli import main
from tests.integration.wire import cloudwatchlogs
from tests.integration.wire.fixtures import use_aws_env
from tests.integration.wire.server import WireServer

VALIDATOR = "/aws/lambda/bulwark-validator"
AUTHORIZER = "/aws/lambda/bulwark-authorizer"


def _container_lines(function: str, n: int) -> list[str]:
    buf = io.StringIO()
    log = make_logger(f"cw-{uuid.uuid4().hex[:8]}", stream=buf)
    chain = AuditChain(f"{function}:{uuid.uuid4().hex}")
    for i in range(n):
        log.append_keys(correlation_id=str(uuid.uuid4()))
        log.info("admitted")  # other lines share the stream
        emit_audit(
            log, {"status": 200 if i % 4 else 401, "source_ip": "198.51.100.7", "principal": "key:abc"}, chain=chain
        )
    return buf.getvalue().splitlines()


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[cloudwatchlogs.LogStore, WireServer]]:
    use_aws_env(monkeypatch)
    store = cloudwatchlogs.LogStore(page_size=7)
    now = int(time.time() * 1000) - 600_000
    # Two validator containers and one authorizer container; events of a group interleave by time.
    for group, function, containers in ((VALIDATOR, "bulwark-validator", 2), (AUTHORIZER, "bulwark-authorizer", 1)):
        store.groups[group] = []
        streams = [
            (f"2025/01/01/[$LATEST]{uuid.uuid4().hex}", _container_lines(function, 9)) for _ in range(containers)
        ]
        for i in range(18):
            for stream, lines in streams:
                if i < len(lines):
                    store.put(group, stream, now + i * 1000, lines[i])
    server = cloudwatchlogs.make(store)
    monkeypatch.setenv("BULWARK_LOGS_ENDPOINT_URL", server.url)
    try:
        yield store, server
    finally:
        server.stop()


def _run(*argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["audit", "verify", *argv, "--json"], out=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def test_intact_log_groups_verify(logs: tuple[cloudwatchlogs.LogStore, WireServer]) -> None:
    # Given three containers' audit records in two log groups, When verified from CloudWatch
    _store, server = logs
    code, report = _run("--log-group", VALIDATOR, "--log-group", AUTHORIZER, "--region", "us-east-1")
    # Then every chain is intact, and every page was read
    assert code == 0, report
    assert report["ok"] is True
    assert report["records"] == 27
    assert len(report["chains"]) == 3
    calls = [r.json() for r in server.requests]
    assert {c["logGroupName"] for c in calls} == {VALIDATOR, AUTHORIZER}
    assert any("nextToken" in c for c in calls)  # paged
    # The audit lines, and the runtime's REPORT lines that account for every invocation of each log stream.
    assert {c["filterPattern"] for c in calls} == {'{ $.message = "audit" }', '"REPORT RequestId"'}


def test_deleted_event_detected(logs: tuple[cloudwatchlogs.LogStore, WireServer]) -> None:
    store, _server = logs
    events = store.groups[VALIDATOR]
    audit_events = [e for e in events if '"audit"' in e["message"]]
    victim = audit_events[6]
    victim_audit = json.loads(victim["message"])["audit"]
    events.remove(victim)
    code, report = _run("--log-group", VALIDATOR, "--region", "us-east-1")
    assert code == 1
    assert [(i["chain"], i["seq"], i["kind"]) for i in report["issues"]] == [
        (victim_audit["chain"], victim_audit["seq"], "deleted")
    ]


def test_edited_event_detected(logs: tuple[cloudwatchlogs.LogStore, WireServer]) -> None:
    store, _server = logs
    events = [e for e in store.groups[AUTHORIZER] if '"audit"' in e["message"]]
    entry = json.loads(events[3]["message"])
    entry["audit"]["source_ip"] = "192.0.2.1"  # hide where an attack came from
    events[3]["message"] = json.dumps(entry)
    code, report = _run("--log-group", AUTHORIZER, "--region", "us-east-1")
    assert code == 1
    assert [(i["seq"], i["kind"]) for i in report["issues"]] == [(4, "edited")]


def test_since_sends_start_time_and_allows_a_partial_chain(logs: tuple[cloudwatchlogs.LogStore, WireServer]) -> None:
    store, server = logs
    # Only the last 5 minutes: the oldest events fall outside the window, so chains start mid-way
    for group in store.groups.values():
        for e in group[:6]:
            e["timestamp"] -= 3_600_000
    before = int(time.time() * 1000)
    code, report = _run("--log-group", VALIDATOR, "--since", "30m", "--region", "us-east-1")
    assert code == 0, report
    start = server.requests[0].json()["startTime"]
    assert before - 1_800_000 - 5_000 <= start <= before - 1_800_000 + 5_000
    assert report["records"] < 18


def test_unknown_log_group_is_a_clear_error(
    logs: tuple[cloudwatchlogs.LogStore, WireServer], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["audit", "verify", "--log-group", "/aws/lambda/nope", "--region", "us-east-1"], out=io.StringIO())
    assert code == 2
    assert "Cannot read log group '/aws/lambda/nope'" in capsys.readouterr().err


def _environment_stream(store: cloudwatchlogs.LogStore, group: str, invocations: int, start_ms: int) -> str:
    """One validator environment's log stream as Lambda writes it: START, the handler's lines with the invocation's
    function_request_id, the audit record (every_invocation), END and REPORT, for each invocation."""
    stream = f"2025/01/02/[$LATEST]{uuid.uuid4().hex}"
    buf = io.StringIO()
    log = make_logger(f"cw-{uuid.uuid4().hex[:8]}", stream=buf)
    chain = AuditChain(f"bulwark-validator:{uuid.uuid4().hex}")
    at = start_ms
    for _ in range(invocations):
        invocation = str(uuid.uuid4())
        log.append_keys(function_request_id=invocation, correlation_id=str(uuid.uuid4()))
        store.put(group, stream, at, f"START RequestId: {invocation} Version: $LATEST")
        emit_audit(log, {"status": 200, "principal": "key:abc"}, chain=chain, every_invocation=True)
        store.put(group, stream, at + 1, buf.getvalue().splitlines()[-1])
        store.put(group, stream, at + 2, f"END RequestId: {invocation}")
        report = f"REPORT RequestId: {invocation}\tDuration: 12.00 ms\tBilled Duration: 12 ms\tMemory Size: 256 MB"
        store.put(group, stream, at + 2, report + "\tMax Memory Used: 80 MB\t")
        at += 1000
    return stream


def test_a_record_cut_from_a_chains_end_is_told_from_a_chain_that_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    use_aws_env(monkeypatch)
    store = cloudwatchlogs.LogStore(page_size=7)
    group = "/aws/lambda/bulwark-validator-streams"
    now = int(time.time() * 1000) - 600_000
    cut = _environment_stream(store, group, 4, now)
    ended = _environment_stream(store, group, 3, now + 500)
    server = cloudwatchlogs.make(store)
    monkeypatch.setenv("BULWARK_LOGS_ENDPOINT_URL", server.url)
    try:
        code, report = _run("--log-group", group, "--region", "us-east-1")
        assert code == 0, report  # both chains simply end with their environments
        assert {s["log_stream"] for s in report["streams"].values()} == {cut, ended}
        # Cut the last audit record of one stream: its chain alone shows no gap, its REPORT lines do.
        last = [e for e in store.groups[group] if e["logStreamName"] == cut and '"audit"' in e["message"]][-1]
        store.groups[group].remove(last)
        code, report = _run("--log-group", group, "--region", "us-east-1")
        assert code == 1
        assert [(i["kind"], i["seq"]) for i in report["issues"]] == [("deleted", None)]
        assert cut in report["issues"][0]["detail"]
    finally:
        server.stop()
