"""Admission: what a caller may spend (Allowance, TenantBudget), what one admission charged (Admission), why a write
was refused, and the deferred refunds given back in a caller's next admission write.

No I/O here: bulwark.store.counters_table builds and sends the one conditional write per admission; this module decides
what a refused write means (which dimension, how long to wait, which headers) from the item the table returned.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from bulwark.errors import RateLimited, RevokedCredentials
from bulwark.limits.gcra import (
    ERROR_CODES,
    MESSAGES,
    Bucket,
    Dimension,
    LimitState,
    rate_limit_headers,
    retry_after_seconds,
)
from bulwark.limits.spend import day_end_ms, day_reset_ms, month_end_ms

# No request lives longer than API Gateway's 29 s: if no admission or settlement touched a caller's in-flight count for
# this long, every slot it still counts belongs to a request that died without settling (a crashed or timed-out
# function), and the count is reset.
INFLIGHT_LEASE_MS = 60_000


@dataclass(frozen=True)
class Allowance:
    """The effective limits for one caller (role limits, per-key overrides and risk tightening applied)."""

    requests_per_minute: int
    tokens_per_minute: int
    daily_tokens: int
    max_concurrent: int | None = None
    budget_day: int | None = None  # micro-dollars per UTC day
    budget_month: int | None = None  # micro-dollars per UTC calendar month
    tenant: TenantBudget | None = None  # the caller's tenant, when the policy gives it budgets of its own


@dataclass(frozen=True)
class TenantBudget:
    """A tenant's own budgets (micro-dollars) and rate limits, on top of each key's: one item per tenant, shared by
    its keys."""

    name: str
    day: int | None = None
    month: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class Admission:
    principal: str
    reserved_tokens: int
    day: str
    tokens_capacity: int
    concurrency: bool
    states: list[LimitState] = field(default_factory=list)
    writes: int = 0
    reserved_cost: int = 0  # micro-dollars
    spend_day: int = 0  # the day's and the month's spend after this admission (reservations included)
    spend_month: int = 0
    tenant: str | None = None  # set when the tenant's spend was charged too (settled with the key's)
    tenant_caps: tuple[int | None, int | None] = (None, None)  # the tenant's requests and tokens per minute
    tenant_spend_day: int = 0  # the tenant's day and month spend after this admission (all its keys, reservations
    tenant_spend_month: int = 0  # included)

    @property
    def month(self) -> str:
        return self.day[:7]


@dataclass
class PendingRefund:
    """Unused reserved tokens of successful calls, given back in this caller's next admission write."""

    tokens: int
    day: str
    tokens_capacity: int
    since_ms: int
    cost: int = 0  # micro-dollars, against `day` and its month


def int_attr(item: dict[str, Any] | None, attr: str) -> int | None:
    """A numeric attribute of a counters item (None when the item or the attribute is missing)."""
    if item is None:
        return None
    v = item.get(attr)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def minute_token_credit(pending: PendingRefund | None, tokens_capacity: int) -> int:
    """The deferred refund that goes back into the tokens-per-minute bucket (none once its capacity changed)."""
    return pending.tokens if pending and pending.tokens_capacity == tokens_capacity else 0


def day_token_credit(pending: PendingRefund | None, day: str) -> int:
    """The deferred refund that counts against `day`'s quota (none once the day has turned)."""
    return pending.tokens if pending and pending.day == day else 0


def spend_credits(pending: PendingRefund | None, day: str) -> tuple[int, int]:
    """The deferred money refund that counts against `day`'s and its month's spend."""
    if pending is None or not pending.cost:
        return 0, 0
    return (pending.cost if pending.day == day else 0), (pending.cost if pending.day[:7] == day[:7] else 0)


def budget_waits(
    item: dict[str, Any],
    budgets: tuple[int | None, int | None],
    cost: int,
    now_ms: int,
    day: str,
    credits: tuple[int, int] = (0, 0),
) -> list[int]:
    """Milliseconds to each period's end for every budget this cost does not fit (empty: it fits)."""
    waits = []
    spent_d = (int_attr(item, "spend_d") or 0) if item.get("day") == day else 0
    if budgets[0] is not None and spent_d - credits[0] + cost > budgets[0]:
        waits.append(day_end_ms(now_ms) - now_ms)
    spent_m = (int_attr(item, "spend_m") or 0) if item.get("month") == day[:7] else 0
    if budgets[1] is not None and spent_m - credits[1] + cost > budgets[1]:
        waits.append(month_end_ms(now_ms) - now_ms)
    return waits


def refuse(dim: Dimension, wait_ms: int, message: str | None = None, states: list[LimitState] | None = None) -> None:
    """Raise RateLimited for `dim`, with a Retry-After of `wait_ms` and, when given, the rate-limit state headers."""
    headers = rate_limit_headers(states) if states else None
    raise RateLimited(
        message or MESSAGES[dim], code=ERROR_CODES[dim], retry_after=retry_after_seconds(wait_ms), headers=headers
    )


def refuse_unfit(allowance: Allowance, tokens: int, cost: int, now_ms: int) -> None:
    """Refuse, before any write, a request that no amount of waiting would admit (it is larger than a limit)."""
    if tokens > allowance.tokens_per_minute:
        refuse(
            "tokens",
            Bucket(allowance.tokens_per_minute).window_ms,
            "This request asks for more tokens than the per-minute limit allows.",
        )
    if tokens > allowance.daily_tokens:
        refuse("daily_tokens", day_reset_ms(now_ms), "This request asks for more tokens than the daily quota.")
    tenant = allowance.tenant
    for budget, period_end in (
        (allowance.budget_day, day_end_ms),
        (allowance.budget_month, month_end_ms),
        (tenant.day if tenant else None, day_end_ms),
        (tenant.month if tenant else None, month_end_ms),
    ):
        if budget is not None and cost > budget:
            refuse("budget", period_end(now_ms) - now_ms, "This request's maximum cost is more than the budget.")


def explain_refusal(
    item: dict[str, Any] | None,
    allowance: Allowance,
    tokens: int,
    now_ms: int,
    day: str,
    tpm_credit: int = 0,
    day_credit: int = 0,
    cost: int = 0,
    cost_credits: tuple[int, int] = (0, 0),
) -> None:
    """Raise for the dimension that refused (the longest wait wins); return if every dimension would admit."""
    if item is None:
        return
    if item.get("revoked"):
        raise RevokedCredentials()
    waits: list[tuple[int, Dimension]] = []
    rpm, tpm = Bucket(allowance.requests_per_minute), Bucket(allowance.tokens_per_minute)
    rs = int_attr(item, "rpm_s") if int_attr(item, "rpm_cap") == rpm.capacity else None
    if not rpm.admits(rs, 1, now_ms):
        waits.append((rpm.wait_ms(rs, 1, now_ms), "requests"))
    ts = int_attr(item, "tpm_s") if int_attr(item, "tpm_cap") == tpm.capacity else None
    ts = None if ts is None else ts - tpm.cost(tpm_credit)
    if not tpm.admits(ts, tokens, now_ms):
        waits.append((tpm.wait_ms(ts, tokens, now_ms), "tokens"))
    if item.get("day") == day and (int_attr(item, "day_used") or 0) - day_credit + tokens > allowance.daily_tokens:
        waits.append((day_reset_ms(now_ms), "daily_tokens"))
    if allowance.max_concurrent is not None and (int_attr(item, "inflight") or 0) >= allowance.max_concurrent:
        waits.append((1000, "concurrency"))
    budgets = (allowance.budget_day, allowance.budget_month)
    waits.extend((w, "budget") for w in budget_waits(item, budgets, cost, now_ms, day, cost_credits))
    if waits:
        wait, dim = max(waits)
        # The 429 carries the same rate-limit state headers as a success (the contract), from this very item.
        refuse(dim, wait, states=limit_states(item, allowance, now_ms, day))


def explain_tenant_refusal(
    item: dict[str, Any], tenant: TenantBudget, tokens: int, cost: int, now_ms: int, day: str
) -> None:
    """Raise for the tenant's limit or budget that refused (the longest wait wins); return if all would admit."""
    waits: list[tuple[int, Dimension, str]] = [
        (w, "budget", "Budget reached: spend for this tenant until the period ends.")
        for w in budget_waits(item, (tenant.day, tenant.month), cost, now_ms, day)
    ]
    for prefix, cap, units, dim in (
        ("rpm", tenant.requests_per_minute, 1, "requests"),
        ("tpm", tenant.tokens_per_minute, tokens, "tokens"),
    ):
        if cap:
            bucket = Bucket(cap)
            state = int_attr(item, prefix + "_s") if int_attr(item, prefix + "_cap") == cap else None
            if not bucket.admits(state, units, now_ms):
                what = "requests" if prefix == "rpm" else "tokens"
                message = f"Rate limit reached: {what} per minute for this tenant."
                waits.append((bucket.wait_ms(state, units, now_ms), dim, message))  # type: ignore[arg-type]
    if waits:
        wait, dim, message = max(waits)
        refuse(dim, wait, message)


def dead_slots_touched(item: dict[str, Any] | None, allowance: Allowance, now_ms: int) -> int | None:
    """When a full in-flight count was last touched, if that was longer than INFLIGHT_LEASE_MS ago (its slots belong
    to requests that died without settling); None when the count is alive or not full."""
    if allowance.max_concurrent is None or item is None:
        return None
    touched = int_attr(item, "inflight_at")
    if (int_attr(item, "inflight") or 0) < allowance.max_concurrent or touched is None:
        return None
    if touched >= now_ms - INFLIGHT_LEASE_MS:
        return None
    return touched


def limit_states(item: dict[str, Any], allowance: Allowance, now_ms: int, day: str) -> list[LimitState]:
    """The caller's rate-limit state (what the response headers say) as of `item`."""
    rpm, tpm = Bucket(allowance.requests_per_minute), Bucket(allowance.tokens_per_minute)
    rs, ts = int_attr(item, "rpm_s"), int_attr(item, "tpm_s")
    used = (int_attr(item, "day_used") or 0) if item.get("day") == day else 0
    return [
        LimitState("rpm", rpm.capacity, rpm.remaining(rs, now_ms), rpm.reset_ms(rs, now_ms), 60),
        LimitState("tpm", tpm.capacity, tpm.remaining(ts, now_ms), tpm.reset_ms(ts, now_ms), 60),
        LimitState("tpd", allowance.daily_tokens, max(0, allowance.daily_tokens - used), day_reset_ms(now_ms), 86_400),
    ]


def settlement(
    admission: Admission, actual_tokens: int, delta: int, dcost: int, *, refund_request: bool, defer: bool
) -> Literal["nothing", "defer", "write"]:
    """How a caller's settlement is made: nothing to write, a refund deferred to the caller's next admission write
    (only unused tokens and money of a successful call, when the caller asked for deferral), or a write now (extra
    usage, in-flight slots and failed calls are always settled at once). `delta` and `dcost` are actual minus
    reserved tokens and micro-dollars."""
    plain = not admission.concurrency and not refund_request
    if delta == 0 and dcost == 0 and plain:
        return "nothing"
    if defer and delta <= 0 and dcost <= 0 and actual_tokens > 0 and plain:
        return "defer"
    return "write"


class PendingRefunds:
    """Deferred refunds per caller (this container's): unused reservations of successful calls, given back inside the
    caller's next admission write or flushed after a while. Refunds only ever lower a charge, so deferring one can
    refuse early, never admit too much."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingRefund] = {}
        self._lock = threading.Lock()

    def claim(self, principal: str) -> PendingRefund | None:
        """Take this caller's refund: only the admission that claimed it may spend it (two concurrent admissions
        using the same credit would give it back twice). `restore` it unless the admission write landed."""
        with self._lock:
            return self._pending.pop(principal, None)

    def restore(self, principal: str, pending: PendingRefund) -> None:
        with self._lock:
            current = self._pending.get(principal)
            if current is None:
                self._pending[principal] = pending
            elif current.day == pending.day and current.tokens_capacity == pending.tokens_capacity:
                current.tokens += pending.tokens
                current.cost += pending.cost
                current.since_ms = min(current.since_ms, pending.since_ms)
            # else: limits changed meanwhile; the older refund is dropped (it can only over-charge)

    def add(self, admission: Admission, refund: int, cost_refund: int, now_ms: int) -> PendingRefund | None:
        """Defer `refund` tokens and `cost_refund` micro-dollars of `admission`. Returns an older refund of this caller
        that can no longer be merged (its limits or day changed): it must be written now."""
        with self._lock:
            old = self._pending.get(admission.principal)
            if old and old.day == admission.day and old.tokens_capacity == admission.tokens_capacity:
                old.tokens += refund
                old.cost += cost_refund
                return None
            self._pending[admission.principal] = PendingRefund(
                refund, admission.day, admission.tokens_capacity, now_ms, cost_refund
            )
            return old

    def take_due(self, cutoff_ms: int, max_count: int) -> list[tuple[str, PendingRefund]]:
        """Remove and return up to `max_count` refunds deferred at or before `cutoff_ms` (callers that did not come
        back)."""
        with self._lock:
            due = [(p, r) for p, r in self._pending.items() if r.since_ms <= cutoff_ms][:max_count]
            for principal, _ in due:
                del self._pending[principal]
        return due
