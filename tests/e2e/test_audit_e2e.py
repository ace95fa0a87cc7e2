"""The session's audit records verify as intact chains, and `bulwark report --json` counts what was sent.

The stack is shared with other e2e tests, so the report is compared before and after this test's own traffic, and
the per-key figures use a key made for this test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from bulwark.auth import keys as keyfmt
from tests.e2e.audit_session import cli, create_key, post_chat, wait_for_audit

pytestmark = pytest.mark.e2e


def _report(local_stack: Any, cwd: Path) -> dict[str, Any]:
    done = cli(local_stack.env, "report", "--json", str(local_stack.log_file), cwd=cwd)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _refusals(report: dict[str, Any]) -> dict[tuple[int, str], int]:
    return {(r["status"], r["code"]): r["count"] for r in report["refusals"]}


def _delta(after: dict[Any, int], before: dict[Any, int], key: Any) -> int:
    return after.get(key, 0) - before.get(key, 0)


def test_session_audit_verifies_and_report_counts_match(local_stack: Any, tmp_path: Path) -> None:
    # Given a fresh key limited to 3 requests a minute, and the report as it stands
    key = create_key(local_stack.env, "audit-e2e", "developer", "--rpm", "3")
    valid = key["api_key"]
    parsed = keyfmt.parse_api_key(valid)
    assert parsed is not None
    principal = f"key:{parsed.key_id}"
    # (the session log exists once the stack has logged anything; the key creation above does not log)
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=valid, max_retries=0)
    client.models.list()
    assert local_stack.log_file is not None
    before = _report(local_stack, tmp_path)

    # When the key sends 3 chats (one with an email address), a 4th over the limit, a model list, a broken body,
    # and someone tries the key id twice with a wrong secret
    ids: set[str] = set()
    for content in ("hello", "my mail is bob.e2e@example.net", "third"):
        raw = client.chat.completions.with_raw_response.create(
            model="demo-echo", messages=[{"role": "user", "content": content}], max_tokens=16
        )
        ids.add(raw.headers["x-request-id"])
    throttled = post_chat(local_stack.base_url, {"Authorization": f"Bearer {valid}"}, "fourth")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "requests_per_minute_exceeded"
    models = client.models.with_raw_response.list()
    broken = post_chat(local_stack.base_url, {"x-api-key": valid}, "", body='{"model": "demo-echo", "messages": [')
    assert broken.status_code == 400
    wrong_secret, _ = keyfmt.new_api_key(parsed.key_id)
    wrong = [post_chat(local_stack.base_url, {"Authorization": f"Bearer {wrong_secret}"}, "hi") for _ in range(2)]
    assert [r.status_code for r in wrong] == [401, 401]
    ids |= {throttled.headers["x-request-id"], models.headers["x-request-id"], broken.headers["x-request-id"]}
    ids |= {r.headers["x-request-id"] for r in wrong}
    records = wait_for_audit(local_stack.log_file, ids)

    # Then each request has exactly one audit record, and the whole session's chains are intact
    assert len(records) == 8
    verified = cli(local_stack.env, "audit", "verify", str(local_stack.log_file), "--json", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = json.loads(verified.stdout)
    assert result["ok"] is True and result["records"] >= 9
    chains = {c["chain"].split(":")[0] for c in result["chains"]}
    assert any("uthorizer" in c for c in chains) and any("alidator" in c for c in chains), chains

    # And the report counts what was sent
    after = _report(local_stack, tmp_path)
    assert after["requests"] - before["requests"] == 8
    mine = next(p for p in after["principals"] if p["principal"] == principal)
    mine_before = next((p for p in before["principals"] if p["principal"] == principal), {"requests": 0, "ok": 0})
    assert mine["requests"] - mine_before["requests"] == 6  # 3 chats + throttled + models + broken
    assert mine["ok"] - mine_before["ok"] == 4
    assert mine["refused"] == 2
    assert after["tokens_by_principal"][principal] > 0
    r_after, r_before = _refusals(after), _refusals(before)
    assert _delta(r_after, r_before, (401, "invalid_credentials")) == 2
    assert _delta(r_after, r_before, (429, "requests_per_minute_exceeded")) == 1
    assert _delta(r_after, r_before, (400, "invalid_json")) == 1
    assert _delta(after["auth_failures_by_reason"], before["auth_failures_by_reason"], "wrong_secret") == 2
    assert _delta(after["throttles_by_limit"], before["throttles_by_limit"], "requests_per_minute_exceeded") == 1
    assert _delta(after["guardrail_hits"], before["guardrail_hits"], "pii:email") == 1
    assert after["latency_ms"]["count"] > before["latency_ms"]["count"]
    assert 0 < after["latency_ms"]["p50"] <= after["latency_ms"]["p99"]
    sources = {s["source_ip"]: s["count"] for s in after["top_failure_sources"]}
    assert sources.get("127.0.0.1", 0) >= 4

    # The human table shows the same
    human = cli(local_stack.env, "report", str(local_stack.log_file), cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    for heading in ("Requests per key / principal", "Refusals by reason", "Top sources of failures", "p99"):
        assert heading in human.stdout
    assert principal in human.stdout
    assert valid not in human.stdout + verified.stdout


def test_tampered_session_log_fails_verification(local_stack: Any, tmp_path: Path) -> None:
    # Given a copy of the session log with one audit record removed
    lines = local_stack.log_file.read_text(encoding="utf-8").splitlines()
    audit_idx = [i for i, line in enumerate(lines) if '"audit"' in line]
    assert len(audit_idx) >= 3
    victim = json.loads(lines[audit_idx[1]])["audit"]
    copy = tmp_path / "tampered.jsonl"
    copy.write_text("\n".join(line for i, line in enumerate(lines) if i != audit_idx[1]) + "\n", encoding="utf-8")
    # When verified, Then the deleted record is named
    done = cli(local_stack.env, "audit", "verify", str(copy), "--json", cwd=tmp_path)
    assert done.returncode == 1
    issues = json.loads(done.stdout)["issues"]
    assert {"chain": victim["chain"], "seq": victim["seq"], "kind": "deleted"} in [
        {k: i[k] for k in ("chain", "seq", "kind")} for i in issues
    ]
