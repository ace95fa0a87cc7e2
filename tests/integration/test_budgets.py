"""Money budgets on DynamoDB Local: exact under concurrency, in the limiter's own write, settled to the real cost.

Given a caller with a budget in micro-dollars, when many threads admit at once, then exactly the requests whose
maximum cost fits are admitted — every run — and a refusal names `budget_exceeded` with a Retry-After to the end of
the UTC day or month.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

import pytest

from bulwark.errors import RateLimited
from bulwark.limits.admission import Allowance, TenantBudget
from bulwark.store.counters_table import CountersTable
from tests.integration.races import T0, race

pytestmark = pytest.mark.integration


def _allow(day: int | None = None, month: int | None = None, tenant: TenantBudget | None = None) -> Allowance:
    """Roomy rate limits, so only the budgets can refuse."""
    return Allowance(
        requests_per_minute=10**6,
        tokens_per_minute=10**9,
        daily_tokens=10**12,
        budget_day=day,
        budget_month=month,
        tenant=tenant,
    )


def _counting(client: Any) -> tuple[Any, list[str]]:
    """The real client, with a record of each DynamoDB operation it sends (to count calls, not to fake any)."""
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(client, name)
            if not callable(attr):
                return attr

            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return attr(*args, **kwargs)

            return call

    return Counting(), calls


@pytest.fixture
def counters(dynamodb_local: Any, fresh_tables: dict[str, str]) -> CountersTable:
    return CountersTable(dynamodb_local.wire_client(), fresh_tables["CountersTable"])


@pytest.mark.parametrize("period", ["day", "month"])
@pytest.mark.parametrize("run", range(3))
def test_100_concurrent_requests_against_a_budget_that_fits_5_admit_exactly_5(
    dynamodb_local: Any, fresh_tables: dict[str, str], run: int, period: str
) -> None:
    tables = [CountersTable(dynamodb_local.wire_client(), fresh_tables["CountersTable"]) for _ in range(4)]
    allowance = _allow(5_000) if period == "day" else _allow(month=5_000)
    ok, refused = race(100, lambda i: tables[i % 4].admit(f"key:budget{run}{period}", allowance, 10, cost=1_000))
    assert len(ok) == 5
    assert len(refused) == 95
    assert {e.code for e in refused} == {"budget_exceeded"}


def test_a_refusal_waits_until_the_period_ends(counters: CountersTable) -> None:
    now = T0 - T0 % 86_400_000 + 3_600_000  # 01:00 UTC
    allowance = _allow(day=1_000)
    counters.admit("key:wait", allowance, 10, now, cost=1_000)
    with pytest.raises(RateLimited) as refused:
        counters.admit("key:wait", allowance, 10, now, cost=1)
    assert refused.value.code == "budget_exceeded"
    assert refused.value.retry_after == 23 * 3600  # to midnight UTC
    t = time.gmtime(now // 1000)
    month_end = calendar.timegm((t.tm_year + (t.tm_mon == 12), t.tm_mon % 12 + 1, 1, 0, 0, 0)) * 1000
    monthly = _allow(month=1_000)
    counters.admit("key:wait-m", monthly, 10, now, cost=1_000)
    with pytest.raises(RateLimited) as refused_m:
        counters.admit("key:wait-m", monthly, 10, now, cost=1)
    assert refused_m.value.retry_after == (month_end - now) // 1000


def test_the_next_day_has_a_new_daily_budget_but_the_month_remembers(counters: CountersTable) -> None:
    allowance = _allow(day=1_000, month=1_500)
    today = T0 - T0 % 86_400_000 - 10 * 86_400_000  # mid-month: tomorrow is in the same month
    counters.admit("key:roll", allowance, 10, today, cost=1_000)
    with pytest.raises(RateLimited):
        counters.admit("key:roll", allowance, 10, today + 1, cost=1)
    tomorrow = today + 86_400_000 + 5
    assert time.gmtime(tomorrow // 1000).tm_mday != 1
    counters.admit("key:roll", allowance, 10, tomorrow, cost=500)  # a new day, 1000 + 500 in the month
    with pytest.raises(RateLimited) as refused:
        counters.admit("key:roll", allowance, 10, tomorrow + 1, cost=1)
    assert refused.value.code == "budget_exceeded"


def test_a_request_costlier_than_the_budget_is_refused_without_a_write(dynamodb_local: Any, fresh_tables: Any) -> None:
    client, calls = _counting(dynamodb_local.wire_client())
    counters = CountersTable(client, fresh_tables["CountersTable"])
    with pytest.raises(RateLimited) as refused:
        counters.admit("key:big", _allow(month=100), 10, T0, cost=101)
    assert refused.value.code == "budget_exceeded"
    assert calls == []


def test_a_refused_request_costs_nothing(counters: CountersTable) -> None:
    allowance = _allow(day=1_000)
    counters.admit("key:free", allowance, 10, T0, cost=600)
    for _ in range(3):
        with pytest.raises(RateLimited):
            counters.admit("key:free", allowance, 10, T0, cost=500)
    counters.admit("key:free", allowance, 10, T0, cost=400)  # 600 + 400: the refusals took nothing


def test_settlement_charges_the_real_cost_and_a_failed_call_nothing(counters: CountersTable) -> None:
    allowance = _allow(day=1_000)
    a = counters.admit("key:settle", allowance, 100, T0, cost=900)
    counters.settle(a, 40, actual_cost=300)  # written at once: 300 spent
    b = counters.admit("key:settle", allowance, 100, T0, cost=700)
    counters.settle(b, 0)  # the upstream failed: all 700 back
    counters.admit("key:settle", allowance, 100, T0, cost=700)  # 300 + 700 = the budget exactly
    with pytest.raises(RateLimited):
        counters.admit("key:settle", allowance, 100, T0, cost=1)


def test_a_deferred_money_refund_rides_the_next_admission_write(dynamodb_local: Any, fresh_tables: Any) -> None:
    client, calls = _counting(dynamodb_local.wire_client())
    counters = CountersTable(client, fresh_tables["CountersTable"])
    allowance = _allow(month=1_000)
    a = counters.admit("key:defer", allowance, 100, T0, cost=1_000)
    assert counters.settle(a, 50, defer_refund=True, actual_cost=400) == 0  # no write: deferred
    b = counters.admit("key:defer", allowance, 100, T0, cost=600)  # fits only with the 600 given back
    assert calls == ["update_item", "update_item"]
    assert b.spend_month == 1_000
    with pytest.raises(RateLimited):
        counters.admit("key:defer", allowance, 100, T0, cost=1)


def test_budgets_add_no_call_to_admission(dynamodb_local: Any, fresh_tables: Any) -> None:
    with_budget = _allow(day=10**9, month=10**10)
    counts = []
    for allowance in (_allow(), with_budget):
        client, calls = _counting(dynamodb_local.wire_client())
        counters = CountersTable(client, fresh_tables["CountersTable"])
        principal = f"key:calls{allowance.budget_day}"
        for i in range(20):
            a = counters.admit(principal, allowance, 100, T0 + i, cost=1_000)
            counters.settle(a, 60, defer_refund=True, actual_cost=500)
        counts.append(len(calls))
    assert counts[0] == counts[1] == 20


@pytest.mark.parametrize("run", range(3))
def test_a_tenant_budget_caps_all_its_keys_together_exactly(
    dynamodb_local: Any, fresh_tables: dict[str, str], run: int
) -> None:
    # Given 10 keys of one tenant, each with room for 10 requests, and a tenant day budget that fits 5 in all
    tables = [CountersTable(dynamodb_local.wire_client(), fresh_tables["CountersTable"]) for _ in range(4)]
    tenant = TenantBudget(f"acme{run}", day=5_000)
    allowance = _allow(day=10_000, tenant=tenant)
    # When 100 requests of all of them arrive at once
    ok, refused = race(100, lambda i: tables[i % 4].admit(f"key:t{run}-{i % 10}", allowance, 10, cost=1_000))
    # Then exactly 5 are admitted, and the refused ones were charged to no key
    assert len(ok) == 5, sorted((e.code, e.message) for e in refused)[:3]
    assert {e.code for e in refused} == {"budget_exceeded"}
    assert all(a.tenant == tenant.name for a in ok)
    for i in range(10):
        admitted_here = sum(a.principal == f"key:t{run}-{i}" for a in ok)
        room = 10_000 - 1_000 * admitted_here  # what each key has left if exactly its admissions were charged
        with pytest.raises(RateLimited):
            tables[0].admit(f"key:t{run}-{i}", _allow(day=10_000), 10, cost=room + 1)
        tables[0].admit(f"key:t{run}-{i}", _allow(day=10_000), 10, cost=room)


def test_a_tenant_settles_to_the_real_cost_and_gives_back_failed_calls(counters: CountersTable) -> None:
    allowance = _allow(tenant=TenantBudget("settling", month=1_000))
    a = counters.admit("key:ts1", allowance, 10, T0, cost=800)
    counters.settle(a, 5, defer_refund=True, actual_cost=300)  # the tenant's part is written at once
    b = counters.admit("key:ts2", allowance, 10, T0, cost=700)  # another key of the tenant: 300 + 700
    counters.settle(b, 0)  # failed: all back
    c = counters.admit("key:ts3", allowance, 10, T0, cost=700)
    assert c.tenant == "settling"
    with pytest.raises(RateLimited) as refused:
        counters.admit("key:ts1", allowance, 10, T0, cost=1)
    assert refused.value.code == "budget_exceeded"
    assert "tenant" in refused.value.message


def test_a_tenant_refusal_gives_back_the_keys_charge(counters: CountersTable) -> None:
    tenant = TenantBudget("giveback", day=1_000)
    counters.admit("key:gb1", _allow(tenant=tenant), 10, T0, cost=1_000)
    with pytest.raises(RateLimited):
        counters.admit("key:gb2", _allow(day=1_000, tenant=tenant), 10, T0, cost=1_000)
    counters.admit("key:gb2", _allow(day=1_000), 10, T0, cost=1_000)  # the key's own budget is untouched


def test_tenant_rate_limits_cap_all_its_keys_together(dynamodb_local: Any, fresh_tables: dict[str, str]) -> None:
    tables = [CountersTable(dynamodb_local.wire_client(), fresh_tables["CountersTable"]) for _ in range(4)]
    allowance = _allow(tenant=TenantBudget("rpm-tenant", requests_per_minute=5))
    ok, refused = race(60, lambda i: tables[i % 4].admit(f"key:rt-{i % 6}", allowance, 10))
    assert len(ok) == 5
    assert {e.code for e in refused} == {"requests_per_minute_exceeded"}
    assert "tenant" in refused[0].message


def test_tenant_tokens_per_minute_settle_to_the_real_usage(counters: CountersTable) -> None:
    allowance = _allow(tenant=TenantBudget("tpm-tenant", tokens_per_minute=1_000))
    a = counters.admit("key:tt1", allowance, 900, T0)
    counters.settle(a, 100, defer_refund=True)  # 800 back to the tenant at once
    b = counters.admit("key:tt2", allowance, 900, T0)  # 100 + 900: fits only with the tenant's refund
    counters.settle(b, 0)  # failed: all back
    counters.admit("key:tt3", allowance, 900, T0)
    with pytest.raises(RateLimited) as refused:
        counters.admit("key:tt1", allowance, 1, T0)
    assert refused.value.code == "tokens_per_minute_exceeded"


def test_a_money_refund_of_a_caller_who_does_not_come_back_is_flushed(counters: CountersTable) -> None:
    allowance = _allow(day=1_000)
    a = counters.admit("key:flush", allowance, 100, T0, cost=1_000)
    assert counters.settle(a, 50, defer_refund=True, actual_cost=250) == 0
    assert counters.flush_pending(older_than_ms=0) == 1  # written on its own: 750 back
    other = CountersTable(counters._ddb, counters._table)  # another container: no pending refund of its own
    other.admit("key:flush", allowance, 100, T0, cost=750)
    with pytest.raises(RateLimited):
        other.admit("key:flush", allowance, 100, T0, cost=1)
