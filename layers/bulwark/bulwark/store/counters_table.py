"""The counters table: rate limits, quotas, in-flight counts and failed attempts, all by atomic conditional writes.

Items (all expire by TTL on `expires_at`):
- ``lim#<principal>``: one item per caller holding every per-caller dimension (requests/min, tokens/min, daily tokens,
  in-flight count) and the revocation mark, so admission is ONE conditional UpdateItem for all of them: either every
  dimension admits and all are charged, or nothing is written (a refused request consumes nothing).
  The caller's spend (micro-dollars) for the UTC day and month lives there too, so a key's budgets are conditions of
  that same write; the item lives until its month is over (the month's spend must outlive a quiet caller).
- ``lim#tenant#<name>``: a tenant's own limits and spend, shared by its keys (a second write only when the policy
  gives the tenant limits or budgets).
- ``lim#model#<name>``: the per-model requests/min ceiling (a second write only when the model has one).
- ``fail#<ip>``: failed credential attempts per source IP, and the cool-down end once over the threshold.

See bulwark.limits.gcra for the arithmetic and why each bucket has a "stale" and a "busy" case.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bulwark.errors import RateLimited, RevokedCredentials, StoreUnavailable
from bulwark.limits.gcra import (
    ERROR_CODES,
    MESSAGES,
    Bucket,
    Dimension,
    LimitState,
    rate_limit_headers,
    retry_after_seconds,
)
from bulwark.limits.spend import day_end_ms, month_end_ms
from bulwark.store.dynamo import ConditionFailed, from_item, store_call

_TTL_SECONDS = 2 * 86_400
_MAX_ATTEMPTS = 8
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

    @property
    def month(self) -> str:
        return self.day[:7]


@dataclass
class _PendingRefund:
    """Unused reserved tokens of successful calls, given back in this caller's next admission write."""

    tokens: int
    day: str
    tokens_capacity: int
    since_ms: int
    cost: int = 0  # micro-dollars, against `day` and its month


def utc_day(now_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now_ms // 1000))


def _day_credit(pending: _PendingRefund | None, day: str) -> int:
    """The deferred refund that counts against `day`'s quota (none once the day has turned)."""
    return pending.tokens if pending and pending.day == day else 0


def _day_reset_ms(now_ms: int) -> int:
    return 86_400_000 - now_ms % 86_400_000


def _cost_credits(pending: _PendingRefund | None, day: str) -> tuple[int, int]:
    """The deferred money refund that counts against `day`'s and its month's spend."""
    if pending is None or not pending.cost:
        return 0, 0
    return (pending.cost if pending.day == day else 0), (pending.cost if pending.day[:7] == day[:7] else 0)


def _spend(
    e: _Expr,
    item: dict[str, Any] | None,
    budgets: tuple[int | None, int | None],
    cost: int,
    day: str,
    credits: tuple[int, int] = (0, 0),
) -> None:
    """The day's and the month's spend (micro-dollars) in the admission write: a budget is one more condition of the
    write the limiter makes anyway, never one more call. Spend is counted with or without a budget, so a budget set
    later starts from the truth; the same hint-then-correct cases as the day's token count."""
    credit_d, credit_m = credits
    budget_day, budget_month = budgets
    sd = e.name("spend_d")
    if item is not None and item.get("day") == day:  # the day quota's condition already pins the day
        if budget_day is not None:
            smax = e.val("sdmax", budget_day - cost + credit_d)
            e.conds.append(f"(attribute_not_exists({sd}) OR {sd} <= {smax})")
        e.sets.append(f"{sd} = if_not_exists({sd}, {e.val('zero_sd', 0)}) + {e.val('sdc', cost - credit_d)}")
    else:
        e.sets.append(f"{sd} = {e.val('sdc', cost)}")
    mo, sm = e.name("month"), e.name("spend_m")
    month = e.val("month", day[:7])
    if item is not None and item.get("month") == day[:7]:
        cond = f"{mo} = {month}"
        if budget_month is not None:
            cond += f" AND {sm} <= {e.val('smmax', budget_month - cost + credit_m)}"
        e.conds.append(f"({cond})")
        e.sets.append(f"{sm} = {sm} + {e.val('smc', cost - credit_m)}")
    else:
        e.conds.append(f"(attribute_not_exists({mo}) OR {mo} <> {month})")
        e.sets.append(f"{mo} = {month}, {sm} = {e.val('smc', cost)}")


def _budget_waits(
    item: dict[str, Any],
    budgets: tuple[int | None, int | None],
    cost: int,
    now_ms: int,
    day: str,
    credits: tuple[int, int] = (0, 0),
) -> list[int]:
    """Milliseconds to each period's end for every budget this cost does not fit (empty: it fits)."""
    waits = []
    spent_d = (_int(item, "spend_d") or 0) if item.get("day") == day else 0
    if budgets[0] is not None and spent_d - credits[0] + cost > budgets[0]:
        waits.append(day_end_ms(now_ms) - now_ms)
    spent_m = (_int(item, "spend_m") or 0) if item.get("month") == day[:7] else 0
    if budgets[1] is not None and spent_m - credits[1] + cost > budgets[1]:
        waits.append(month_end_ms(now_ms) - now_ms)
    return waits


def _spend_ttl(now_ms: int) -> int:
    # The month's spend must outlive a quiet caller until the month is over.
    return max(now_ms // 1000 + _TTL_SECONDS, month_end_ms(now_ms) // 1000 + 86_400)


class _Expr:
    """Builds one UpdateExpression/ConditionExpression with unique placeholders."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.adds: list[str] = []
        self.conds: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, str]] = {}

    def name(self, attr: str) -> str:
        ph = "#" + attr
        self.names[ph] = attr
        return ph

    def val(self, key: str, v: int | str) -> str:
        ph = ":" + key
        self.values[ph] = {"N": str(v)} if isinstance(v, int) else {"S": v}
        return ph

    def bucket(self, prefix: str, bucket: Bucket, units: int, stale: bool, now_ms: int, credit: int = 0) -> None:
        """One bucket's case. `credit` units (a deferred refund) are given back in the same write, never beyond a
        full bucket: with credit r the state is max(S - r, now), so the cases split at S = now + r."""
        s, cap = self.name(prefix + "_s"), self.name(prefix + "_cap")
        c = self.val(prefix + "_c", bucket.capacity)
        r = bucket.cost(credit)
        now = self.val(prefix + "_now", bucket.now_scaled(now_ms) + r)
        if stale:
            self.conds.append(f"(attribute_not_exists({s}) OR {s} < {now} OR {cap} <> {c})")
            self.sets.append(f"{s} = {self.val(prefix + '_new', bucket.now_scaled(now_ms) + bucket.cost(units))}")
            self.sets.append(f"{cap} = {c}")
        else:
            ceil = self.val(prefix + "_ceil", bucket.busy_ceiling(units, now_ms) + r)
            self.conds.append(f"({cap} = {c} AND {s} >= {now} AND {s} <= {ceil})")
            self.sets.append(f"{s} = {s} + {self.val(prefix + '_cost', bucket.cost(units) - r)}")

    def kwargs(self, return_values: str = "ALL_NEW") -> dict[str, Any]:
        update = "SET " + ", ".join(self.sets)
        if self.adds:
            update += " ADD " + ", ".join(self.adds)
        kw: dict[str, Any] = {
            "UpdateExpression": update,
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": self.values,
            "ReturnValues": return_values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if self.conds:
            kw["ConditionExpression"] = " AND ".join(self.conds)
        return kw


class CountersTable:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name
        # Last item seen per key: a hint for which bucket case to try first, so most admissions are one write.
        self._hints: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, _PendingRefund] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ admission
    def admit(
        self,
        principal: str,
        allowance: Allowance,
        tokens: int,
        now_ms: int | None = None,
        *,
        model: str | None = None,
        model_rpm: int | None = None,
        cost: int = 0,
    ) -> Admission:
        """Charge one request, `tokens` reserved tokens and `cost` reserved micro-dollars to `principal`, atomically,
        or raise RateLimited. Budgets are conditions of the same write: no extra call."""
        live_clock = now_ms is None
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        if tokens > allowance.tokens_per_minute:
            self._refuse(
                "tokens",
                Bucket(allowance.tokens_per_minute).window_ms,
                "This request asks for more tokens than the per-minute limit allows.",
            )
        if tokens > allowance.daily_tokens:
            self._refuse(
                "daily_tokens", _day_reset_ms(now_ms), "This request asks for more tokens than the daily quota."
            )
        tenant = allowance.tenant
        for budget, period_end in (
            (allowance.budget_day, day_end_ms),
            (allowance.budget_month, month_end_ms),
            (tenant.day if tenant else None, day_end_ms),
            (tenant.month if tenant else None, month_end_ms),
        ):
            if budget is not None and cost > budget:
                self._refuse(
                    "budget", period_end(now_ms) - now_ms, "This request's maximum cost is more than the budget."
                )
        # Claim this caller's deferred refund: only this admission may spend it (two concurrent admissions using
        # the same credit would give it back twice). Put back unless the admission write landed.
        with self._lock:
            claim: list[_PendingRefund | None] = [self._pending.pop(principal, None)]
        try:
            return self._admit_loop(
                principal, allowance, tokens, now_ms, live_clock, claim, model=model, model_rpm=model_rpm, cost=cost
            )
        except BaseException:
            if claim[0] is not None:
                self._restore(principal, claim[0])
            raise

    def _restore(self, principal: str, pending: _PendingRefund) -> None:
        with self._lock:
            current = self._pending.get(principal)
            if current is None:
                self._pending[principal] = pending
            elif current.day == pending.day and current.tokens_capacity == pending.tokens_capacity:
                current.tokens += pending.tokens
                current.cost += pending.cost
                current.since_ms = min(current.since_ms, pending.since_ms)
            # else: limits changed meanwhile; the older refund is dropped (it can only over-charge)

    def _admit_loop(
        self,
        principal: str,
        allowance: Allowance,
        tokens: int,
        now_ms: int,
        live_clock: bool,
        claim: list[_PendingRefund | None],
        *,
        model: str | None,
        model_rpm: int | None,
        cost: int = 0,
    ) -> Admission:
        rpm, tpm = Bucket(allowance.requests_per_minute), Bucket(allowance.tokens_per_minute)
        day = utc_day(now_ms)
        pk = "lim#" + principal
        item = self._hint(pk)
        writes = 0
        pending = claim[0]
        for attempt in range(_MAX_ATTEMPTS):
            tpm_credit = pending.tokens if pending and pending.tokens_capacity == tpm.capacity else 0
            day_credit = _day_credit(pending, day)
            cost_credits = _cost_credits(pending, day)
            e = _Expr()
            e.conds.append(f"attribute_not_exists({e.name('revoked')})")
            e.bucket(
                "rpm",
                rpm,
                1,
                rpm.is_stale(_int(item, "rpm_s"), now_ms) or _int(item, "rpm_cap") != rpm.capacity,
                now_ms,
            )
            tpm_state = _int(item, "tpm_s")
            e.bucket(
                "tpm",
                tpm,
                tokens,
                tpm.is_stale(None if tpm_state is None else tpm_state - tpm.cost(tpm_credit), now_ms)
                or _int(item, "tpm_cap") != tpm.capacity,
                now_ms,
                tpm_credit,
            )
            d, du = e.name("day"), e.name("day_used")
            if item is not None and item.get("day") == day:
                dmax = allowance.daily_tokens - tokens + day_credit
                e.conds.append(f"({d} = {e.val('day', day)} AND {du} <= {e.val('dmax', dmax)})")
                e.sets.append(f"{du} = {du} + {e.val('tok', tokens - day_credit)}")
            else:
                e.conds.append(f"(attribute_not_exists({d}) OR {d} <> {e.val('day', day)})")
                e.sets.append(f"{d} = :day, {du} = {e.val('tok', tokens)}")
            _spend(e, item, (allowance.budget_day, allowance.budget_month), cost, day, cost_credits)
            if allowance.max_concurrent is not None:
                inf = e.name("inflight")
                e.conds.append(f"(attribute_not_exists({inf}) OR {inf} < {e.val('kmax', allowance.max_concurrent)})")
                e.adds.append(f"{inf} {e.val('one', 1)}")
                e.sets.append(f"{e.name('inflight_at')} = {e.val('inf_now', now_ms)}")
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', _spend_ttl(now_ms))}")
            try:
                writes += 1
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                if self._reset_dead_slots(pk, item, allowance, now_ms):
                    continue
                # The clock stays this request's arrival time across retries: advancing it would move a hot caller's
                # item back into the "stale" case on every retry, where concurrent writers collide (only one wins
                # each round). Only before refusing is the present consulted: another container's clock may be a
                # few ms ahead, and a refusal must hold (and its Retry-After be true) now, not at arrival.
                try:
                    self._explain_refusal(
                        item, allowance, tokens, now_ms, day, tpm_credit, day_credit, cost, cost_credits
                    )
                except RateLimited:
                    present = int(time.time() * 1000)
                    if not live_clock or present <= now_ms:
                        raise
                    now_ms, day = present, utc_day(present)
                    day_credit = _day_credit(pending, day)  # the day may have turned; the minute bucket's credit not
                    cost_credits = _cost_credits(pending, day)
                    self._explain_refusal(
                        item, allowance, tokens, now_ms, day, tpm_credit, day_credit, cost, cost_credits
                    )
                if attempt:
                    # A hot caller: several containers raced for the same item. A short jittered pause lets the
                    # winners land, so retries do not collide again in lockstep.
                    time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                continue  # every dimension would admit: the hint was wrong or the item moved; try the right cases
            self._remember(pk, new)
            claim[0] = None  # the refund landed with this write
            states = self._states(new, allowance, now_ms, day)
            charged = Admission(
                principal, tokens, day, tpm.capacity, allowance.max_concurrent is not None, reserved_cost=cost
            )
            tenant = allowance.tenant
            try:
                # The tenant's budgets and the model's ceiling are other items: a second write each, only when
                # configured. A refusal there gives back everything this request was charged.
                if tenant is not None:
                    writes += self._admit_tenant(tenant, tokens, cost, now_ms)
                    charged = replace(
                        charged,
                        tenant=tenant.name,
                        tenant_caps=(tenant.requests_per_minute, tenant.tokens_per_minute),
                    )
                if model is not None and model_rpm is not None:
                    writes += self._admit_model(model, model_rpm, now_ms)
            except RateLimited:
                self.settle(charged, actual_tokens=0, refund_request=True, requests_capacity=rpm.capacity)
                raise
            return Admission(
                principal,
                tokens,
                day,
                tpm.capacity,
                allowance.max_concurrent is not None,
                states,
                writes,
                reserved_cost=cost,
                spend_day=_int(new, "spend_d") or 0,
                spend_month=_int(new, "spend_m") or 0,
                tenant=charged.tenant,
                tenant_caps=charged.tenant_caps,
            )
        # Persistent contention: refuse rather than loop; the client retries shortly.
        self._refuse("requests", 1000, "The request could not be admitted under contention. Retry shortly.")
        raise AssertionError("unreachable")

    def _admit_tenant(self, tenant: TenantBudget, tokens: int, cost: int, now_ms: int) -> int:
        """Charge one request, `tokens` and `cost` to the tenant, within its limits and budgets, or raise
        RateLimited."""
        pk = "lim#tenant#" + tenant.name
        budgets = (tenant.day, tenant.month)
        rpm = Bucket(tenant.requests_per_minute) if tenant.requests_per_minute else None
        tpm = Bucket(tenant.tokens_per_minute) if tenant.tokens_per_minute else None
        if tpm is not None and tokens > tpm.capacity:
            self._refuse("tokens", tpm.window_ms, "This request asks for more tokens than the tenant's limit allows.")
        day = utc_day(now_ms)
        item = self._hint(pk)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            e = _Expr()
            for prefix, bucket, units in (("rpm", rpm, 1), ("tpm", tpm, tokens)):
                if bucket is not None:
                    state, cap = _int(item, prefix + "_s"), _int(item, prefix + "_cap")
                    stale = bucket.is_stale(state, now_ms) or cap != bucket.capacity
                    e.bucket(prefix, bucket, units, stale, now_ms)
            d = e.name("day")
            if item is not None and item.get("day") == day:
                e.conds.append(f"{d} = {e.val('day', day)}")
            else:
                e.conds.append(f"(attribute_not_exists({d}) OR {d} <> {e.val('day', day)})")
                e.sets.append(f"{d} = :day")
            _spend(e, item, budgets, cost, day)
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', _spend_ttl(now_ms))}")
            try:
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                self._explain_tenant_refusal(item or {}, tenant, tokens, cost, now_ms, day)
                # One item for all of a tenant's keys is hot by design: let the winners land (as for a hot key).
                time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                continue
            self._remember(pk, new)
            return attempt
        self._refuse("requests", 1000, "The request could not be admitted under contention. Retry shortly.")
        raise AssertionError("unreachable")

    def _explain_tenant_refusal(
        self, item: dict[str, Any], tenant: TenantBudget, tokens: int, cost: int, now_ms: int, day: str
    ) -> None:
        """Raise for the tenant's limit or budget that refused (the longest wait wins); return if all would admit."""
        waits: list[tuple[int, Dimension, str]] = [
            (w, "budget", "Budget reached: spend for this tenant until the period ends.")
            for w in _budget_waits(item, (tenant.day, tenant.month), cost, now_ms, day)
        ]
        for prefix, cap, units, dim in (
            ("rpm", tenant.requests_per_minute, 1, "requests"),
            ("tpm", tenant.tokens_per_minute, tokens, "tokens"),
        ):
            if cap:
                bucket = Bucket(cap)
                state = _int(item, prefix + "_s") if _int(item, prefix + "_cap") == cap else None
                if not bucket.admits(state, units, now_ms):
                    what = "requests" if prefix == "rpm" else "tokens"
                    message = f"Rate limit reached: {what} per minute for this tenant."
                    waits.append((bucket.wait_ms(state, units, now_ms), dim, message))  # type: ignore[arg-type]
        if waits:
            wait, dim, message = max(waits)
            self._refuse(dim, wait, message)

    def _settle_tenant(self, admission: Admission, delta: int, dcost: int, refund_request: bool) -> int:
        """The tenant's share of a settlement: its spend, its tokens per minute, and on a rollback its request
        (written at once, never deferred)."""
        rpm_cap, tpm_cap = admission.tenant_caps
        parts = bool(dcost) or bool(delta and tpm_cap) or bool(refund_request and rpm_cap)
        if admission.tenant is None or not parts:
            return 0
        e = _Expr()
        if dcost:
            sd, sm, d, mo = e.name("spend_d"), e.name("spend_m"), e.name("day"), e.name("month")
            e.sets.append(f"{sm} = {sm} + {e.val('dc', dcost)}")
            e.conds.append(f"{mo} = {e.val('mon', admission.month)}")
            e.sets.append(f"{sd} = if_not_exists({sd}, {e.val('zero', 0)}) + :dc")
            e.conds.append(f"{d} = {e.val('day', admission.day)}")
        if delta and tpm_cap:
            ts = e.name("tpm_s")
            e.sets.append(f"{ts} = {ts} + {e.val('dts', delta * 60_000)}")
            e.conds.append(f"{e.name('tpm_cap')} = {e.val('tc', tpm_cap)}")
        if refund_request and rpm_cap:
            rs = e.name("rpm_s")
            e.sets.append(f"{rs} = {rs} - {e.val('rcost', 60_000)}")
            e.conds.append(f"{e.name('rpm_cap')} = {e.val('rc', rpm_cap)}")
        pk = "lim#tenant#" + admission.tenant
        try:
            self._remember(pk, self._update(pk, e))
        except ConditionFailed:
            # The day turned or a limit changed: the buckets refill on their own; the month's spend still counts.
            return 1 + (self._settle_month(admission, dcost, pk) if dcost else 0)
        return 1

    def _admit_model(self, model: str, rpm_limit: int, now_ms: int) -> int:
        pk = "lim#model#" + model
        bucket = Bucket(rpm_limit)
        item = self._hint(pk)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            e = _Expr()
            e.bucket(
                "rpm",
                bucket,
                1,
                bucket.is_stale(_int(item, "rpm_s"), now_ms) or _int(item, "rpm_cap") != rpm_limit,
                now_ms,
            )
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', now_ms // 1000 + _TTL_SECONDS)}")
            try:
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                state = _int(item, "rpm_s") if _int(item, "rpm_cap") == rpm_limit else None
                if not bucket.admits(state, 1, now_ms):
                    self._refuse("model_requests", bucket.wait_ms(state, 1, now_ms))
                continue
            self._remember(pk, new)
            return attempt
        self._refuse("model_requests", 1000)
        raise AssertionError("unreachable")

    def _reset_dead_slots(self, pk: str, item: dict[str, Any] | None, allowance: Allowance, now_ms: int) -> bool:
        """Reset an in-flight count that nothing touched for INFLIGHT_LEASE_MS (see there). True if it was reset."""
        if allowance.max_concurrent is None or item is None:
            return False
        touched = _int(item, "inflight_at")
        if (_int(item, "inflight") or 0) < allowance.max_concurrent or touched is None:
            return False
        if touched >= now_ms - INFLIGHT_LEASE_MS:
            return False
        e = _Expr()
        e.sets.append(f"{e.name('inflight')} = {e.val('zero', 0)}")
        e.sets.append(f"{e.name('inflight_at')} = {e.val('now', now_ms)}")
        e.conds.append(f"{e.name('inflight_at')} = {e.val('old', touched)}")  # one container resets, once
        try:
            self._remember(pk, self._update(pk, e))
        except ConditionFailed:
            pass  # another container reset it or admitted meanwhile: re-judge with the fresh item
        return True

    def _explain_refusal(
        self,
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
        rs = _int(item, "rpm_s") if _int(item, "rpm_cap") == rpm.capacity else None
        if not rpm.admits(rs, 1, now_ms):
            waits.append((rpm.wait_ms(rs, 1, now_ms), "requests"))
        ts = _int(item, "tpm_s") if _int(item, "tpm_cap") == tpm.capacity else None
        ts = None if ts is None else ts - tpm.cost(tpm_credit)
        if not tpm.admits(ts, tokens, now_ms):
            waits.append((tpm.wait_ms(ts, tokens, now_ms), "tokens"))
        if item.get("day") == day and (_int(item, "day_used") or 0) - day_credit + tokens > allowance.daily_tokens:
            waits.append((_day_reset_ms(now_ms), "daily_tokens"))
        if allowance.max_concurrent is not None and (_int(item, "inflight") or 0) >= allowance.max_concurrent:
            waits.append((1000, "concurrency"))
        budgets = (allowance.budget_day, allowance.budget_month)
        waits.extend((w, "budget") for w in _budget_waits(item, budgets, cost, now_ms, day, cost_credits))
        if waits:
            wait, dim = max(waits)
            # The 429 carries the same rate-limit state headers as a success (the contract), from this very item.
            self._refuse(dim, wait, states=self._states(item, allowance, now_ms, day))

    @staticmethod
    def _refuse(
        dim: Dimension, wait_ms: int, message: str | None = None, states: list[LimitState] | None = None
    ) -> None:
        headers = rate_limit_headers(states) if states else None
        raise RateLimited(
            message or MESSAGES[dim], code=ERROR_CODES[dim], retry_after=retry_after_seconds(wait_ms), headers=headers
        )

    # ------------------------------------------------------------------ settlement
    def settle(
        self,
        admission: Admission,
        actual_tokens: int,
        *,
        refund_request: bool = False,
        requests_capacity: int | None = None,
        defer_refund: bool = False,
        actual_cost: int = 0,
    ) -> int:
        """Replace the reservation by the real usage (a failed call passes 0: everything reserved comes back).

        With `defer_refund`, unused tokens of a successful call are not written now but given back inside this
        caller's next admission write (or by `flush_pending` within seconds). Refunds only ever lower a charge, so
        deferring one can refuse early, never admit too much. Extra usage (actual above the reservation), in-flight
        slots and failed calls are always settled at once. Money settles the same way as tokens: `actual_cost`
        replaces `admission.reserved_cost` (a failed call passes 0). Returns the number of writes."""
        delta = actual_tokens - admission.reserved_tokens
        dcost = actual_cost - admission.reserved_cost
        if admission.tenant is not None:
            tenant_writes = self._settle_tenant(admission, delta, dcost, refund_request)
            rest = replace(admission, tenant=None)
            return tenant_writes + self.settle(
                rest,
                actual_tokens,
                refund_request=refund_request,
                requests_capacity=requests_capacity,
                defer_refund=defer_refund,
                actual_cost=actual_cost,
            )
        plain = not admission.concurrency and not refund_request
        if delta == 0 and dcost == 0 and plain:
            return 0
        if defer_refund and delta <= 0 and dcost <= 0 and actual_tokens > 0 and plain:
            return self._defer(admission, -delta, -dcost)
        e = _Expr()
        conds: list[str] = []
        if delta or dcost:
            ts, tc, d, du = e.name("tpm_s"), e.name("tpm_cap"), e.name("day"), e.name("day_used")
            if delta:
                e.sets.append(f"{ts} = {ts} + {e.val('dts', delta * 60_000)}")
                e.sets.append(f"{du} = {du} + {e.val('dd', delta)}")
            if dcost:
                sd, sm, mo = e.name("spend_d"), e.name("spend_m"), e.name("month")
                e.sets.append(f"{sd} = {sd} + {e.val('dc', dcost)}, {sm} = {sm} + :dc")
                conds.append(f"{mo} = {e.val('mon', admission.month)}")
            conds.append(f"{tc} = {e.val('tc', admission.tokens_capacity)} AND {d} = {e.val('day', admission.day)}")
        if refund_request and requests_capacity is not None:
            rs, rc = e.name("rpm_s"), e.name("rpm_cap")
            e.sets.append(f"{rs} = {rs} - {e.val('rcost', 60_000)}")
            conds.append(f"{rc} = {e.val('rc', requests_capacity)}")
        if admission.concurrency:
            e.adds.append(f"{e.name('inflight')} {e.val('m1', -1)}")
            e.sets.append(f"{e.name('inflight_at')} = {e.val('inf_now', int(time.time() * 1000))}")
            conds.append(f"{e.name('inflight')} > {e.val('zero', 0)}")  # a reset count never goes negative
        e.conds.extend(conds)
        pk = "lim#" + admission.principal
        if not e.sets:
            e.sets.append(f"{e.name('expires_at')} = {e.name('expires_at')}")
        try:
            new = self._update(pk, e)
        except ConditionFailed as failed:
            return 1 + self._settle_apart(admission, failed.item or {}, delta, dcost)
        self._remember(pk, new)
        return 1

    def _settle_apart(self, admission: Admission, item: dict[str, Any], delta: int, dcost: int) -> int:
        """The limits changed, the day rolled over, or the in-flight count was reset since admission: settle the parts
        that still apply, one at a time. Returns the number of writes."""
        writes = 0
        same_day = item.get("day") == admission.day
        if (delta or dcost) and same_day and item.get("tpm_cap") == admission.tokens_capacity:
            writes += self._settle_part(admission, delta, dcost, concurrency=False)
        elif (delta or dcost) and same_day:
            # The minute limit changed (a risk tightening, a policy push): its bucket refills on its own, but the
            # day's count is the caller's quota and is compared with the audit; it is settled all the same.
            writes += self._settle_day(admission, delta, dcost)
        elif dcost and item.get("month") == admission.month:
            writes += self._settle_month(admission, dcost)  # the day turned: the month's spend still counts
        if admission.concurrency and (_int(item, "inflight") or 0) > 0:
            writes += self._settle_part(admission, 0, 0, concurrency=True)
        return writes

    def _settle_month(self, admission: Admission, dcost: int, pk: str | None = None) -> int:
        pk = pk or "lim#" + admission.principal
        e = _Expr()
        sm = e.name("spend_m")
        e.sets.append(f"{sm} = {sm} + {e.val('dc', dcost)}")
        e.conds.append(f"{e.name('month')} = {e.val('mon', admission.month)}")
        try:
            self._remember(pk, self._update(pk, e))
        except (ConditionFailed, StoreUnavailable):
            return 0  # the month turned: last month's spend no longer limits anything
        return 1

    def _settle_day(self, admission: Admission, delta: int, dcost: int = 0) -> int:
        """Settle `delta` tokens (and `dcost` micro-dollars) on the day's and month's counts alone (the minute
        bucket's capacity changed since admission)."""
        e = _Expr()
        d, du = e.name("day"), e.name("day_used")
        e.sets.append(f"{du} = {du} + {e.val('dd', delta)}")
        if dcost:
            sd, sm = e.name("spend_d"), e.name("spend_m")
            e.sets.append(f"{sd} = {sd} + {e.val('dc', dcost)}, {sm} = {sm} + :dc")
        e.conds.append(f"{d} = {e.val('day', admission.day)}")
        try:
            self._remember("lim#" + admission.principal, self._update("lim#" + admission.principal, e))
        except (ConditionFailed, StoreUnavailable):
            return 0  # the day turned meanwhile: yesterday's count no longer limits anything
        return 1

    def _settle_part(self, admission: Admission, delta: int, dcost: int = 0, *, concurrency: bool) -> int:
        """Settle only the tokens and money (`delta`, `dcost`) or only the in-flight slot of an admission."""
        part = Admission(
            admission.principal,
            admission.reserved_tokens,
            admission.day,
            admission.tokens_capacity,
            concurrency,
            reserved_cost=admission.reserved_cost,
        )
        try:
            self.settle(
                part, actual_tokens=admission.reserved_tokens + delta, actual_cost=admission.reserved_cost + dcost
            )
        except (ConditionFailed, StoreUnavailable):
            return 0
        return 1

    def _defer(self, admission: Admission, refund: int, cost_refund: int = 0) -> int:
        now_ms = int(time.time() * 1000)
        flush: _PendingRefund | None = None
        with self._lock:
            old = self._pending.get(admission.principal)
            if old and old.day == admission.day and old.tokens_capacity == admission.tokens_capacity:
                old.tokens += refund
                old.cost += cost_refund
                return 0
            flush = old
            self._pending[admission.principal] = _PendingRefund(
                refund, admission.day, admission.tokens_capacity, now_ms, cost_refund
            )
        if flush is None:
            return 0
        return self._write_refund(admission.principal, flush)  # limits or day changed: settle the old one now

    def flush_pending(self, older_than_ms: int = 2_000, max_writes: int = 2) -> int:
        """Write refunds that waited longer than `older_than_ms` (callers that did not come back). Returns writes."""
        cutoff = int(time.time() * 1000) - older_than_ms
        with self._lock:
            due = [(p, r) for p, r in self._pending.items() if r.since_ms <= cutoff][:max_writes]
            for principal, _ in due:
                del self._pending[principal]
        return sum(self._write_refund(principal, refund) for principal, refund in due)

    def _write_refund(self, principal: str, refund: _PendingRefund) -> int:
        try:
            return self.settle(
                Admission(
                    principal, refund.tokens, refund.day, refund.tokens_capacity, False, reserved_cost=refund.cost
                ),
                0,
            )
        except StoreUnavailable:
            return 0  # a lost refund only ever over-charges; the window refills it

    # ------------------------------------------------------------------ revocation mark
    def mark_revoked(self, principal: str) -> None:
        """Model calls check this mark in the admission write itself: revocation is immediate for them."""
        with store_call():
            self._ddb.update_item(
                TableName=self._table,
                Key={"pk": {"S": "lim#" + principal}},
                UpdateExpression="SET revoked = :t REMOVE expires_at",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )

    # ------------------------------------------------------------------ failed attempts per source IP
    def failure_key(self, ip: str) -> tuple[str, dict[str, Any]]:
        """(table, key) of an IP's failure item, for a batched read by the authorizer."""
        return self._table, {"pk": {"S": "fail#" + ip}}

    @staticmethod
    def blocked_until_ms(item: dict[str, Any] | None) -> int:
        return _int(item, "blocked_until") or 0

    def record_failure(self, ip: str, threshold: int, window_s: int, cooldown_s: int, now_ms: int | None = None) -> int:
        """Count one failed attempt; returns the cool-down end (epoch ms) if the IP is now blocked, else 0."""
        return self._count_failure("fail#" + ip, threshold, window_s, cooldown_s, now_ms)

    def record_key_failure(
        self, key_id: str, threshold: int, window_s: int, cooldown_s: int, now_ms: int | None = None
    ) -> int:
        """Count one wrong secret for a key id (from any address); returns the end of its flagged period (epoch ms)
        once the threshold is crossed, else 0. Under the same `fail#` prefix as the addresses ("key#" is no IP)."""
        return self._count_failure("fail#key#" + key_id, threshold, window_s, cooldown_s, now_ms)

    def _count_failure(self, pk: str, threshold: int, window_s: int, cooldown_s: int, now_ms: int | None) -> int:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        bucket = Bucket(threshold, window_s * 1000)
        item = self._hint(pk)
        for _ in range(_MAX_ATTEMPTS):
            e = _Expr()
            e.bucket(
                "f", bucket, 1, bucket.is_stale(_int(item, "f_s"), now_ms) or _int(item, "f_cap") != threshold, now_ms
            )
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', now_ms // 1000 + window_s + cooldown_s + 60)}")
            try:
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                state = _int(item, "f_s") if _int(item, "f_cap") == threshold else None
                if bucket.admits(state, 1, now_ms):
                    continue
                until = now_ms + cooldown_s * 1000
                b = _Expr()
                b.sets.append(f"{b.name('blocked_until')} = {b.val('bu', until)}")
                b.sets.append(f"{b.name('expires_at')} = {b.val('ttl', now_ms // 1000 + cooldown_s + 60)}")
                self._remember(pk, self._update(pk, b))
                return until
            self._remember(pk, new)
            blocked = _int(new, "blocked_until") or 0
            return blocked if blocked > now_ms else 0
        return 0

    # ------------------------------------------------------------------ plumbing
    def _update(self, pk: str, e: _Expr) -> dict[str, Any]:
        with store_call():
            resp = self._ddb.update_item(TableName=self._table, Key={"pk": {"S": pk}}, **e.kwargs())
        return from_item(resp.get("Attributes", {}))

    def _read(self, pk: str) -> dict[str, Any] | None:
        with store_call():
            resp = self._ddb.get_item(TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        raw = resp.get("Item")
        return from_item(raw) if raw else None

    def _hint(self, pk: str) -> dict[str, Any] | None:
        with self._lock:
            return self._hints.get(pk)

    def _remember(self, pk: str, item: dict[str, Any]) -> None:
        with self._lock:
            if len(self._hints) > 10_000:
                self._hints.clear()
            self._hints[pk] = item

    def _states(self, item: dict[str, Any], allowance: Allowance, now_ms: int, day: str) -> list[LimitState]:
        rpm, tpm = Bucket(allowance.requests_per_minute), Bucket(allowance.tokens_per_minute)
        rs, ts = _int(item, "rpm_s"), _int(item, "tpm_s")
        used = (_int(item, "day_used") or 0) if item.get("day") == day else 0
        return [
            LimitState("rpm", rpm.capacity, rpm.remaining(rs, now_ms), rpm.reset_ms(rs, now_ms), 60),
            LimitState("tpm", tpm.capacity, tpm.remaining(ts, now_ms), tpm.reset_ms(ts, now_ms), 60),
            LimitState(
                "tpd", allowance.daily_tokens, max(0, allowance.daily_tokens - used), _day_reset_ms(now_ms), 86_400
            ),
        ]


def _int(item: dict[str, Any] | None, attr: str) -> int | None:
    if item is None:
        return None
    v = item.get(attr)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
