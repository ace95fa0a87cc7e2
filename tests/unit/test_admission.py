"""The limiter's decisions without a table: why a counters item refuses, how a settlement is made, deferred refunds.

The writes themselves (one conditional UpdateItem per admission) are proved against DynamoDB Local in
tests/integration/test_rate_limits.py and test_budgets.py; these tests read decoded items as the table returns them.
"""

from __future__ import annotations

import pytest

from bulwark.errors import RateLimited, RevokedCredentials
from bulwark.limits.admission import (
    INFLIGHT_LEASE_MS,
    Admission,
    Allowance,
    PendingRefund,
    PendingRefunds,
    TenantBudget,
    budget_waits,
    day_token_credit,
    dead_slots_touched,
    explain_refusal,
    explain_tenant_refusal,
    int_attr,
    minute_token_credit,
    refuse_unfit,
    settlement,
    spend_credits,
)
from bulwark.limits.spend import day_end_ms, utc_day

NOW = 1_780_000_000_000  # a fixed instant (ms)
DAY = utc_day(NOW)
ALLOWANCE = Allowance(requests_per_minute=10, tokens_per_minute=1_000, daily_tokens=5_000, max_concurrent=2)


def admission(*, concurrency: bool = False) -> Admission:
    return Admission("k1", 100, DAY, 1_000, concurrency, reserved_cost=50)


def test_numeric_attributes_are_read_as_ints_and_booleans_are_not_numbers() -> None:
    assert int_attr({"a": 3.0, "b": True, "c": "7"}, "a") == 3
    assert int_attr({"b": True}, "b") is None
    assert int_attr({"c": "7"}, "c") is None
    assert int_attr(None, "a") is None


def test_a_request_larger_than_a_limit_is_refused_before_any_write() -> None:
    with pytest.raises(RateLimited) as tokens:
        refuse_unfit(ALLOWANCE, 1_001, 0, NOW)
    assert tokens.value.code == "tokens_per_minute_exceeded"
    budgeted = Allowance(10, 1_000, 5_000, tenant=TenantBudget("acme", day=40))
    with pytest.raises(RateLimited) as budget:
        refuse_unfit(budgeted, 10, 41, NOW)
    assert budget.value.retry_after == pytest.approx((day_end_ms(NOW) - NOW) / 1000, abs=1)
    refuse_unfit(budgeted, 10, 40, NOW)  # fits: no exception


def test_an_item_that_would_admit_explains_nothing_and_a_revoked_one_is_revoked() -> None:
    explain_refusal({"day": DAY, "day_used": 0}, ALLOWANCE, 10, NOW, DAY)
    explain_refusal(None, ALLOWANCE, 10, NOW, DAY)
    with pytest.raises(RevokedCredentials):
        explain_refusal({"revoked": True}, ALLOWANCE, 10, NOW, DAY)


def test_the_daily_quota_refusal_counts_the_deferred_refund_of_the_same_day() -> None:
    item = {"day": DAY, "day_used": 4_950}
    with pytest.raises(RateLimited) as refused:
        explain_refusal(item, ALLOWANCE, 100, NOW, DAY)
    assert refused.value.code == "quota_exceeded"
    assert refused.value.headers  # a 429 carries the same state headers as a success
    explain_refusal(item, ALLOWANCE, 100, NOW, DAY, day_credit=50)  # 4950 - 50 + 100 fits 5000


def test_a_full_in_flight_count_refuses_and_is_dead_only_after_its_lease() -> None:
    item = {"inflight": 2, "inflight_at": NOW - 1_000}
    with pytest.raises(RateLimited) as refused:
        explain_refusal(item, ALLOWANCE, 1, NOW, DAY)
    assert refused.value.code == "concurrency_exceeded"
    assert dead_slots_touched(item, ALLOWANCE, NOW) is None
    stale = {"inflight": 2, "inflight_at": NOW - INFLIGHT_LEASE_MS - 1}
    assert dead_slots_touched(stale, ALLOWANCE, NOW) == NOW - INFLIGHT_LEASE_MS - 1
    assert dead_slots_touched({"inflight": 1, "inflight_at": 0}, ALLOWANCE, NOW) is None  # not full


def test_budgets_wait_until_their_period_ends_and_credits_count() -> None:
    item = {"day": DAY, "month": DAY[:7], "spend_d": 90, "spend_m": 90}
    assert budget_waits(item, (100, None), 10, NOW, DAY) == []
    assert budget_waits(item, (100, None), 11, NOW, DAY) == [day_end_ms(NOW) - NOW]
    assert budget_waits(item, (100, None), 11, NOW, DAY, (1, 0)) == []
    assert budget_waits({"day": "2000-01-01", "spend_d": 10**9}, (100, None), 11, NOW, DAY) == []  # another day


def test_a_tenant_refusal_names_the_tenant() -> None:
    tenant = TenantBudget("acme", day=100)
    with pytest.raises(RateLimited) as refused:
        explain_tenant_refusal({"day": DAY, "spend_d": 95}, tenant, 1, 10, NOW, DAY)
    assert "tenant" in str(refused.value)


def test_deferred_credits_apply_only_to_their_day_month_and_capacity() -> None:
    pending = PendingRefund(tokens=30, day=DAY, tokens_capacity=1_000, since_ms=NOW, cost=7)
    assert minute_token_credit(pending, 1_000) == 30
    assert minute_token_credit(pending, 2_000) == 0
    assert day_token_credit(pending, DAY) == 30
    assert day_token_credit(pending, "2000-01-01") == 0
    assert spend_credits(pending, DAY) == (7, 7)
    assert spend_credits(pending, DAY[:7] + "-00") == (0, 7)  # same month, another day
    assert spend_credits(None, DAY) == (0, 0)


def test_how_a_settlement_is_made() -> None:
    a = admission()
    assert settlement(a, 100, 0, 0, refund_request=False, defer=True) == "nothing"
    assert settlement(a, 60, -40, -20, refund_request=False, defer=True) == "defer"
    assert settlement(a, 60, -40, -20, refund_request=False, defer=False) == "write"
    assert settlement(a, 160, 60, 30, refund_request=False, defer=True) == "write"  # extra usage: at once
    assert settlement(a, 0, -100, -50, refund_request=False, defer=True) == "write"  # a failed call: at once
    assert settlement(admission(concurrency=True), 100, 0, 0, refund_request=False, defer=True) == "write"


def test_pending_refunds_merge_per_day_and_capacity_and_are_claimed_once() -> None:
    refunds = PendingRefunds()
    assert refunds.add(admission(), 10, 1, NOW) is None
    assert refunds.add(admission(), 5, 2, NOW + 1) is None  # merged
    claimed = refunds.claim("k1")
    assert claimed is not None
    assert (claimed.tokens, claimed.cost, claimed.since_ms) == (15, 3, NOW)
    assert refunds.claim("k1") is None
    refunds.restore("k1", claimed)
    other_day = Admission("k1", 100, "2000-01-01", 1_000, False)
    older = refunds.add(other_day, 4, 0, NOW + 2)  # cannot merge: the older refund must be written now
    assert older is not None and older.tokens == 15
    assert refunds.take_due(NOW + 1, 10) == []
    due = refunds.take_due(NOW + 2, 10)
    assert [(p, r.tokens) for p, r in due] == [("k1", 4)]
