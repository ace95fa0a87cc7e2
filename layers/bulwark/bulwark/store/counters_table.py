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

This module builds and sends the DynamoDB requests and reads the items back; what they mean is decided above it:
bulwark.limits.admission (the value types, refusal explanations, deferred refunds), bulwark.limits.spend (the calendar
arithmetic) and bulwark.limits.gcra (the bucket arithmetic, and why each bucket has a "stale" and a "busy" case).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from typing import Any

from bulwark.errors import RateLimited, StoreUnavailable
from bulwark.limits.admission import (
    Admission,
    Allowance,
    PendingRefund,
    PendingRefunds,
    TenantBudget,
    day_token_credit,
    dead_slots_touched,
    explain_refusal,
    explain_tenant_refusal,
    int_attr,
    limit_states,
    minute_token_credit,
    refuse,
    refuse_unfit,
    settlement,
    spend_credits,
)
from bulwark.limits.gcra import Bucket
from bulwark.limits.spend import spend_expiry_s, utc_day
from bulwark.store.dynamo import ConditionFailed, from_item, store_call

_TTL_SECONDS = 2 * 86_400
_MAX_ATTEMPTS = 8


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
        # Last item seen per key (guarded by _lock): a hint for which bucket case to try first, so most admissions are
        # one write.
        self._hints: dict[str, dict[str, Any]] = {}
        self._pending = PendingRefunds()
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
        refuse_unfit(allowance, tokens, cost, now_ms)
        # Claim this caller's deferred refund: only this admission may spend it (two concurrent admissions using
        # the same credit would give it back twice). Put back unless the admission write landed.
        claim: list[PendingRefund | None] = [self._pending.claim(principal)]
        try:
            return self._admit_loop(
                principal, allowance, tokens, now_ms, live_clock, claim, model=model, model_rpm=model_rpm, cost=cost
            )
        except BaseException:
            if claim[0] is not None:
                self._pending.restore(principal, claim[0])
            raise

    def _admit_loop(
        self,
        principal: str,
        allowance: Allowance,
        tokens: int,
        now_ms: int,
        live_clock: bool,
        claim: list[PendingRefund | None],
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
            tpm_credit = minute_token_credit(pending, tpm.capacity)
            day_credit = day_token_credit(pending, day)
            cost_credits = spend_credits(pending, day)
            e = _Expr()
            e.conds.append(f"attribute_not_exists({e.name('revoked')})")
            e.bucket(
                "rpm",
                rpm,
                1,
                rpm.is_stale(int_attr(item, "rpm_s"), now_ms) or int_attr(item, "rpm_cap") != rpm.capacity,
                now_ms,
            )
            tpm_state = int_attr(item, "tpm_s")
            e.bucket(
                "tpm",
                tpm,
                tokens,
                tpm.is_stale(None if tpm_state is None else tpm_state - tpm.cost(tpm_credit), now_ms)
                or int_attr(item, "tpm_cap") != tpm.capacity,
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
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', spend_expiry_s(now_ms, _TTL_SECONDS))}")
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
                    explain_refusal(item, allowance, tokens, now_ms, day, tpm_credit, day_credit, cost, cost_credits)
                except RateLimited:
                    present = int(time.time() * 1000)
                    if not live_clock or present <= now_ms:
                        raise
                    now_ms, day = present, utc_day(present)
                    day_credit = day_token_credit(pending, day)  # the day may have turned; the minute bucket's not
                    cost_credits = spend_credits(pending, day)
                    explain_refusal(item, allowance, tokens, now_ms, day, tpm_credit, day_credit, cost, cost_credits)
                if attempt:
                    # A hot caller: several containers raced for the same item. A short jittered pause lets the
                    # winners land, so retries do not collide again in lockstep.
                    time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                continue  # every dimension would admit: the hint was wrong or the item moved; try the right cases
            self._remember(pk, new)
            claim[0] = None  # the refund landed with this write
            states = limit_states(new, allowance, now_ms, day)
            charged = Admission(
                principal, tokens, day, tpm.capacity, allowance.max_concurrent is not None, reserved_cost=cost
            )
            tenant = allowance.tenant
            try:
                # The tenant's budgets and the model's ceiling are other items: a second write each, only when
                # configured. A refusal there gives back everything this request was charged.
                if tenant is not None:
                    tenant_writes, tenant_item = self._admit_tenant(tenant, tokens, cost, now_ms)
                    writes += tenant_writes
                    charged = replace(
                        charged,
                        tenant=tenant.name,
                        tenant_caps=(tenant.requests_per_minute, tenant.tokens_per_minute),
                        tenant_spend_day=int_attr(tenant_item, "spend_d") or 0,
                        tenant_spend_month=int_attr(tenant_item, "spend_m") or 0,
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
                spend_day=int_attr(new, "spend_d") or 0,
                spend_month=int_attr(new, "spend_m") or 0,
                tenant=charged.tenant,
                tenant_caps=charged.tenant_caps,
                tenant_spend_day=charged.tenant_spend_day,
                tenant_spend_month=charged.tenant_spend_month,
            )
        # Persistent contention: refuse rather than loop; the client retries shortly.
        refuse("requests", 1000, "The request could not be admitted under contention. Retry shortly.")
        raise AssertionError("unreachable")

    def _admit_tenant(
        self, tenant: TenantBudget, tokens: int, cost: int, now_ms: int
    ) -> tuple[int, dict[str, Any] | None]:
        """Charge one request, `tokens` and `cost` to the tenant, within its limits and budgets, or raise
        RateLimited. Returns the writes it took and the tenant's item after them (its spend, for the soft alert)."""
        pk = "lim#tenant#" + tenant.name
        budgets = (tenant.day, tenant.month)
        rpm = Bucket(tenant.requests_per_minute) if tenant.requests_per_minute else None
        tpm = Bucket(tenant.tokens_per_minute) if tenant.tokens_per_minute else None
        if tpm is not None and tokens > tpm.capacity:
            refuse("tokens", tpm.window_ms, "This request asks for more tokens than the tenant's limit allows.")
        day = utc_day(now_ms)
        item = self._hint(pk)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            e = _Expr()
            for prefix, bucket, units in (("rpm", rpm, 1), ("tpm", tpm, tokens)):
                if bucket is not None:
                    state, cap = int_attr(item, prefix + "_s"), int_attr(item, prefix + "_cap")
                    stale = bucket.is_stale(state, now_ms) or cap != bucket.capacity
                    e.bucket(prefix, bucket, units, stale, now_ms)
            d = e.name("day")
            if item is not None and item.get("day") == day:
                e.conds.append(f"{d} = {e.val('day', day)}")
            else:
                e.conds.append(f"(attribute_not_exists({d}) OR {d} <> {e.val('day', day)})")
                e.sets.append(f"{d} = :day")
            _spend(e, item, budgets, cost, day)
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', spend_expiry_s(now_ms, _TTL_SECONDS))}")
            try:
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                explain_tenant_refusal(item or {}, tenant, tokens, cost, now_ms, day)
                # One item for all of a tenant's keys is hot by design: let the winners land (as for a hot key).
                time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                continue
            self._remember(pk, new)
            return attempt, new
        refuse("requests", 1000, "The request could not be admitted under contention. Retry shortly.")
        raise AssertionError("unreachable")

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
                bucket.is_stale(int_attr(item, "rpm_s"), now_ms) or int_attr(item, "rpm_cap") != rpm_limit,
                now_ms,
            )
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', now_ms // 1000 + _TTL_SECONDS)}")
            try:
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                state = int_attr(item, "rpm_s") if int_attr(item, "rpm_cap") == rpm_limit else None
                if not bucket.admits(state, 1, now_ms):
                    refuse("model_requests", bucket.wait_ms(state, 1, now_ms))
                continue
            self._remember(pk, new)
            return attempt
        refuse("model_requests", 1000)
        raise AssertionError("unreachable")

    def _reset_dead_slots(self, pk: str, item: dict[str, Any] | None, allowance: Allowance, now_ms: int) -> bool:
        """Reset an in-flight count whose slots outlived INFLIGHT_LEASE_MS (bulwark.limits.admission). True if reset."""
        touched = dead_slots_touched(item, allowance, now_ms)
        if touched is None:
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
        how = settlement(admission, actual_tokens, delta, dcost, refund_request=refund_request, defer=defer_refund)
        if how == "nothing":
            return 0
        if how == "defer":
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
        if admission.concurrency and (int_attr(item, "inflight") or 0) > 0:
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
        flush = self._pending.add(admission, refund, cost_refund, int(time.time() * 1000))
        if flush is None:
            return 0
        return self._write_refund(admission.principal, flush)  # limits or day changed: settle the old one now

    def flush_pending(self, older_than_ms: int = 2_000, max_writes: int = 2) -> int:
        """Write refunds that waited longer than `older_than_ms` (callers that did not come back). Returns writes."""
        due = self._pending.take_due(int(time.time() * 1000) - older_than_ms, max_writes)
        return sum(self._write_refund(principal, refund) for principal, refund in due)

    def _write_refund(self, principal: str, refund: PendingRefund) -> int:
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
        return int_attr(item, "blocked_until") or 0

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
                "f",
                bucket,
                1,
                bucket.is_stale(int_attr(item, "f_s"), now_ms) or int_attr(item, "f_cap") != threshold,
                now_ms,
            )
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', now_ms // 1000 + window_s + cooldown_s + 60)}")
            try:
                new = self._update(pk, e)
            except ConditionFailed as failed:
                item = failed.item if failed.item is not None else self._read(pk)
                state = int_attr(item, "f_s") if int_attr(item, "f_cap") == threshold else None
                if bucket.admits(state, 1, now_ms):
                    continue
                until = now_ms + cooldown_s * 1000
                b = _Expr()
                b.sets.append(f"{b.name('blocked_until')} = {b.val('bu', until)}")
                b.sets.append(f"{b.name('expires_at')} = {b.val('ttl', now_ms // 1000 + cooldown_s + 60)}")
                self._remember(pk, self._update(pk, b))
                return until
            self._remember(pk, new)
            blocked = int_attr(new, "blocked_until") or 0
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
