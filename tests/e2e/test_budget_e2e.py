"""Money budgets through `bulwark local`: a key created with the CLI's `--budget` is refused with `budget_exceeded`
once its day's spend is used, with a Retry-After to UTC midnight, and every audit record carries the request's cost."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.audit_session import cli, create_key, post_chat, wait_for_audit

pytestmark = pytest.mark.e2e


def test_a_key_with_a_tiny_budget_gets_budget_exceeded_and_the_audit_has_the_cost(
    local_stack: Any, tmp_path: Path
) -> None:
    # Given a key whose daily budget is 1000 micro-dollars (demo-echo: $1 in, $2 out per million tokens)
    key = create_key(local_stack.env, "budget-e2e", "developer", "--budget", "0.001/day", "--tenant", "acme-e2e")
    assert key["limits"]["budget_day_micro_usd"] == 1000
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    # When it sends requests that reserve about 70 micro-dollars each (32 output tokens at $2 per million), until
    # refused and a few more
    answers: list[requests.Response] = []
    while len(answers) < 100 and sum(r.status_code == 429 for r in answers) < 3:
        answers.append(post_chat(local_stack.base_url, headers, f"hello {len(answers)}"))
    statuses = [r.status_code for r in answers]
    # Then some are admitted, and then every one is refused for the budget, in the contract's shape
    assert statuses[0] == 200
    assert 429 in statuses, statuses
    first_refusal = statuses.index(429)
    assert set(statuses[first_refusal:]) == {429}, statuses
    refused = answers[first_refusal]
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "budget_exceeded"
    to_midnight = 86_400 - int(time.time()) % 86_400
    assert abs(int(refused.headers["Retry-After"]) - to_midnight) <= 5
    # And each admitted request's audit record has its settled cost; together they stay within the budget
    ids = {r.headers["x-request-id"] for r in answers}
    records = {rec["request_id"]: rec for rec in wait_for_audit(local_stack.log_file, ids)}
    admitted = [records[r.headers["x-request-id"]] for r in answers if r.status_code == 200]
    assert all(rec["cost_micro_usd"] > 0 for rec in admitted)
    assert all(rec["cost_reserved_micro_usd"] >= rec["cost_micro_usd"] for rec in admitted)
    assert sum(rec["cost_micro_usd"] for rec in admitted) <= 1000
    assert all(records[r.headers["x-request-id"]]["cost_micro_usd"] == 0 for r in answers if r.status_code == 429)
    # And the one request whose settled cost took the day's spend past 80% is marked in its audit record
    marks = [rec["verdicts"].get("budget:day") for rec in admitted]
    assert marks.count("soft_threshold_80") == 1, [(rec["cost_micro_usd"], rec["verdicts"]) for rec in admitted]
    # And `bulwark report` breaks the tenant's requests, refusals, tokens and spend down
    done = cli(local_stack.env, "report", "--json", str(local_stack.log_file), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tenant = next(t for t in json.loads(done.stdout)["tenants"] if t["tenant"] == "acme-e2e")
    assert tenant["requests"] == len(answers)
    assert tenant["refused"] == statuses.count(429)
    assert tenant["spend_micro_usd"] == sum(rec["cost_micro_usd"] for rec in admitted)
    assert tenant["tokens"] == sum(rec["prompt_tokens"] + rec["completion_tokens"] for rec in admitted)


def test_a_tenant_budget_in_the_policy_caps_its_keys_together(local_stack: Any) -> None:
    # Given two keys of a tenant whose policy budget is 1000 micro-dollars a day, neither with a budget of its own
    keys = [create_key(local_stack.env, f"tenant-e2e-{i}", "developer", "--tenant", "e2e-capped") for i in range(2)]
    headers = [{"Authorization": f"Bearer {k['api_key']}"} for k in keys]
    # When both send requests in turn until refused
    answers: list[requests.Response] = []
    while len(answers) < 100 and not any(r.status_code == 429 for r in answers[-2:]):
        answers.append(post_chat(local_stack.base_url, headers[len(answers) % 2], f"hi {len(answers)}"))
    # Then both keys were admitted, then refused for the tenant's budget, and the tenant spent no more than it
    refused = [r for r in answers if r.status_code == 429]
    assert refused and refused[0].json()["error"]["code"] == "budget_exceeded"
    assert "tenant" in refused[0].json()["error"]["message"]
    ids = {r.headers["x-request-id"] for r in answers}
    records = wait_for_audit(local_stack.log_file, ids)
    assert {r["principal"] for r in records if r["status"] == 200} == {f"key:{k['key_id']}" for k in keys}
    assert sum(r["cost_micro_usd"] for r in records) <= 1000
    assert all(r["tenant"] == "e2e-capped" for r in records)
    # And the one request whose settled cost took the tenant's day past 80% is marked, whichever key sent it (a
    # reservation is about 70 micro-dollars, so the tenant always crosses 800 before it is refused)
    marks = [r["verdicts"].get("budget:tenant:day") for r in records if r["status"] == 200]
    assert marks.count("soft_threshold_80") == 1, [(r["cost_micro_usd"], r["verdicts"]) for r in records]
    assert not any("budget:day" in r["verdicts"] for r in records)  # the keys have no budgets of their own
