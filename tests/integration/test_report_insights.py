"""`bulwark report --stack NAME` against a local server speaking the CloudWatch Logs wire protocol, Logs Insights
included: the saved queries it finds are template.yaml's own, and its interpreter runs them over the log events.

The audit records are written by the real logger (Powertools JSON, `emit_audit`) into the authorizer's, validator's
and invoker's log groups, and the same lines into a local log file: the deployed report must equal the local one.
Then each way it can fail says what to do next.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bulwark.observability.audit import AuditChain, emit_audit
from bulwark.observability.logs import make_logger
from bulwark_dev.cli import main
from tests.integration.wire import cloudwatchlogs
from tests.integration.wire.fixtures import use_aws_env
from tests.integration.wire.server import WireServer

ROOT = Path(__file__).resolve().parents[2]
STACK = "bulwark-int"
AUTHORIZER, VALIDATOR, INVOKER = (f"/aws/lambda/{STACK}-{f}" for f in ("authorizer", "validator", "invoker"))

# One request each: (log group, audit record). Every kind the report counts, in both the authorizer's and the
# validator's shapes, and the invoker's refusal of a forged call.
RECORDS: list[tuple[str, dict[str, Any]]] = [
    *[
        (
            VALIDATOR,
            {
                "status": 200,
                "principal": "key:alpha",
                "tenant": "acme",
                "source_ip": "198.51.100.1",
                "prompt_tokens": 10 + i,
                "completion_tokens": 5,
                "cost_micro_usd": 20 + i,
                "latency_ms": 12.5 + 3 * i,
                "verdicts": {"json": "ok", "schema": "ok"},
            },
        )
        for i in range(9)
    ],
    (
        VALIDATOR,
        {
            "status": 200,
            "principal": "key:beta",
            "source_ip": "198.51.100.2",
            "prompt_tokens": 7,
            "completion_tokens": 9,
            "cost_micro_usd": 25,
            "latency_ms": 40,
            "verdicts": {"json": "ok", "guardrail:pii:email": "redact", "guardrail:pii:phone": "redact"},
        },
    ),
    (
        VALIDATOR,
        {
            "status": 200,
            "principal": "jwt:carol",
            "tenant": "globex",
            "source_ip": "198.51.100.3",
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "cost_micro_usd": 0,
            "latency_ms": 8,
            "verdicts": {"output:canary": "block", "guardrail:pii:email": "redact"},
        },
    ),
    *[
        (AUTHORIZER, {"status": 401, "code": "invalid_credentials", "source_ip": ip, "verdicts": {"auth": reason}})
        for ip, reason in (
            ("203.0.113.9", "unknown_key"),
            ("203.0.113.9", "unknown_key"),
            ("203.0.113.7", "expired"),
            ("", "missing"),
        )
    ],
    (AUTHORIZER, {"status": 403, "code": "forbidden", "source_ip": "192.0.2.4", "verdicts": {"auth": "cidr"}}),
    (
        VALIDATOR,
        {
            "status": 429,
            "principal": "key:alpha",
            "tenant": "acme",
            "code": "requests_per_minute_exceeded",
            "source_ip": "198.51.100.1",
            "latency_ms": 3,
            "verdicts": {"limits": "requests_per_minute_exceeded"},
        },
    ),
    (
        VALIDATOR,
        {
            "status": 429,
            "principal": "key:beta",
            "code": "budget_exceeded",
            "source_ip": "198.51.100.2",
            "cost_micro_usd": 0,
            "verdicts": {"limits": "budget_exceeded"},
        },
    ),
    (VALIDATOR, {"status": 429, "principal": "key:beta", "source_ip": "198.51.100.2", "verdicts": {"limits": "tpm"}}),
    (
        VALIDATOR,
        {
            "status": 400,
            "principal": "key:alpha",
            "tenant": "acme",
            "code": "content_policy_violation",
            "source_ip": "198.51.100.1",
            "verdicts": {"guardrail:prompt_injection": "block"},
        },
    ),
    (
        VALIDATOR,
        {
            "status": 502,
            "principal": "jwt:carol",
            "tenant": "globex",
            "code": "upstream_error",
            "source_ip": "198.51.100.3",
            "latency_ms": 1500,
        },
    ),
    (INVOKER, {"status": 403, "principal": "key:alpha", "event": "invoker_request_refused", "reason": "replayed"}),
]


@dataclass
class Logs:
    store: cloudwatchlogs.LogStore
    server: WireServer
    local_log: Path


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Logs]:
    use_aws_env(monkeypatch)
    store = cloudwatchlogs.LogStore()
    store.query_definitions = cloudwatchlogs.saved_queries_from_template(ROOT / "template.yaml", STACK)
    store.groups = {AUTHORIZER: [], VALIDATOR: [], INVOKER: []}
    local_log = tmp_path / "session.jsonl"
    now = int(time.time() * 1000) - 3_600_000
    chains = {group: AuditChain(f"{group}:{uuid.uuid4().hex}") for group in store.groups}
    with local_log.open("w", encoding="utf-8") as out:
        for i, (group, record) in enumerate(RECORDS):
            buf = io.StringIO()
            log = make_logger(f"report-{uuid.uuid4().hex[:8]}", stream=buf)
            log.info("admitted")  # lines that are not audit records share the groups
            emit_audit(log, {**record, "ts": now + i * 1000}, chain=chains[group])
            for line in buf.getvalue().splitlines():
                store.put(group, "2026/01/01/[$LATEST]0123", now + i * 1000, line)
                out.write(line + "\n")
    server = cloudwatchlogs.make(store)
    monkeypatch.setenv("BULWARK_LOGS_ENDPOINT_URL", server.url)
    try:
        yield Logs(store, server, local_log)
    finally:
        server.stop()


def _report(*argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["report", *argv, "--json"], out=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def test_the_stack_report_equals_the_local_report_of_the_same_lines(
    logs: Logs, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the same audit lines are reported from the deployed stack's log groups and from a local log
    code, cloud = _report("--stack", STACK, "--since", "1d", "--region", "eu-west-1")
    progress = capsys.readouterr().err
    local_code, local = _report(str(logs.local_log))
    assert (code, local_code) == (0, 0), progress

    # Then every figure is the same, field for field (this fake's pct is the nearest rank, as the local report's;
    # tests/e2e/test_report_stack_e2e.py states the tolerance real Logs Insights needs)
    assert cloud.pop("source") == sorted({AUTHORIZER, VALIDATOR, INVOKER})
    assert local.pop("source") == [str(logs.local_log)]
    assert cloud == local
    # And the figures are the ones sent, so the equality is not two empty reports
    assert cloud["requests"] == len(RECORDS) == 22
    assert cloud["status"] == {"200": 11, "400": 1, "401": 4, "403": 2, "429": 3, "502": 1}
    assert cloud["auth_failures_by_reason"] == {"unknown_key": 2, "expired": 1, "missing": 1}
    assert cloud["throttles_by_limit"] == {"budget_exceeded": 1, "requests_per_minute_exceeded": 1, "tpm": 1}
    assert cloud["guardrail_hits"] == {"canary": 1, "pii:email": 2, "pii:phone": 1, "prompt_injection": 1}
    # (ties by name: "-" is the authorizer's refusal without an address and the invoker's, which has none)
    assert cloud["top_failure_sources"][:3] == [
        {"source_ip": "-", "count": 2},
        {"source_ip": "198.51.100.1", "count": 2},
        {"source_ip": "198.51.100.2", "count": 2},
    ]
    assert {t["tenant"]: t["spend_micro_usd"] for t in cloud["tenants"]} == {"acme": 216, "-": 25, "globex": 0}
    assert cloud["latency_ms"]["count"] == 13 and cloud["latency_ms"]["max"] == 1500.0

    # And each saved query ran once over the window, on the three log groups, with a bounded result
    started = logs.store.started
    assert sorted(body["queryString"] for body in started) == sorted(
        d["queryString"] for d in logs.store.query_definitions if "/report/" in d["name"]
    )
    for body in started:
        assert sorted(body["logGroupNames"]) == sorted({AUTHORIZER, VALIDATOR, INVOKER})
        assert body["endTime"] - body["startTime"] == 86_400 and abs(body["endTime"] - time.time()) < 60
        assert body["limit"] == 10_000
    # And people see what runs and what it scanned (Insights bills by bytes scanned)
    assert f"Running 5 saved Logs Insights queries of stack {STACK}" in progress
    assert "bulwark-int/report/requests:" in progress and "Scanned" in progress


def test_the_human_report_from_a_stack(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["report", "--stack", STACK], out=out) == 0
    text = out.getvalue()
    assert text.startswith("22 requests  (200: 11, 400: 1, 401: 4, 403: 2, 429: 3, 502: 1)")
    assert "Guardrail hits" in text and "pii:email" in text and "acme" in text


def test_the_window_leaves_older_records_out(logs: Logs) -> None:
    # Records are an hour old: a 30-minute window has none of them
    code, cloud = _report("--stack", STACK, "--since", "30m")
    assert code == 0
    assert cloud["requests"] == 0 and cloud["latency_ms"]["count"] == 0


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    out = io.StringIO()
    code = main(["report", "--stack", *argv], out=out)
    err = capsys.readouterr().err
    assert code == 1, err
    assert out.getvalue() == ""
    return err


def test_no_credentials_says_how_to_sign_in(
    logs: Logs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err = _fails(capsys, STACK)
    assert "No AWS credentials found" in err and "aws sso login" in err
    assert not logs.store.started


def test_a_wrong_stack_name_or_region_finds_no_saved_queries(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, "bulwark-in", "--region", "eu-west-3")  # a prefix of the real name is not the stack
    assert "No saved Logs Insights queries named 'bulwark-in/...' in region eu-west-3" in err
    assert "--region" in err


def test_a_stack_deployed_from_an_older_template_is_told_to_deploy(
    logs: Logs, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.store.query_definitions = [d for d in logs.store.query_definitions if "/report/" not in d["name"]]
    err = _fails(capsys, STACK)
    assert "predates `bulwark report --stack`" in err and f"{STACK}/report/requests" in err


@pytest.mark.parametrize("action", ["DescribeQueryDefinitions", "StartQuery", "GetQueryResults"])
def test_access_denied_names_the_iam_actions_needed(
    logs: Logs, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    logs.store.denied = {action}
    err = _fails(capsys, STACK)
    assert f"Access denied to logs:{action}" in err
    assert "logs:DescribeQueryDefinitions, logs:StartQuery, logs:GetQueryResults" in err


@pytest.mark.parametrize("outcome", ["Failed", "Cancelled", "Timeout"])
def test_a_query_that_does_not_complete_is_an_error(
    logs: Logs, capsys: pytest.CaptureFixture[str], outcome: str
) -> None:
    logs.store.query_outcome = outcome
    err = _fails(capsys, STACK)
    assert f"ended {outcome}" in err


def test_the_wait_is_bounded_and_running_queries_are_stopped(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    logs.store.polls_to_finish = 1_000
    began = time.monotonic()
    err = _fails(capsys, STACK, "--timeout", "0.6")
    assert time.monotonic() - began < 10
    assert "did not finish within 0.6 s" in err and "--since" in err
    # Every started query was stopped: a query left running keeps scanning (and billing)
    assert len(logs.store.stopped) == len(logs.store.started) == 5


def test_a_stack_and_a_local_path_together_are_a_usage_error(logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(logs.local_log), "--stack", STACK], out=io.StringIO()) == 2
    assert "not both" in capsys.readouterr().err
