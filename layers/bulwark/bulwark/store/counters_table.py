"""The counters table: rate limits, quotas, in-flight counts and failed attempts, all by atomic conditional writes.

Items (all expire by TTL on `expires_at`):
- ``lim#<principal>``: one item per caller holding every per-caller dimension (requests/min, tokens/min, daily tokens,
  in-flight count) and the revocation mark, so admission is ONE conditional UpdateItem for all of them: either every
  dimension admits and all are charged, or nothing is written (a refused request consumes nothing).
- ``lim#model#<name>``: the per-model requests/min ceiling (a second write only when the model has one).
- ``fail#<ip>``: failed credential attempts per source IP, and the cool-down end once over the threshold.

See bulwark.limits.gcra for the arithmetic and why each bucket has a "stale" and a "busy" case.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Admission:
    principal: str
    reserved_tokens: int
    day: str
    tokens_capacity: int
    concurrency: bool
    states: list[LimitState] = field(default_factory=list)
    writes: int = 0


@dataclass
class _PendingRefund:
    """Unused reserved tokens of successful calls, given back in this caller's next admission write."""

    tokens: int
    day: str
    tokens_capacity: int
    since_ms: int


def utc_day(now_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now_ms // 1000))


def _day_credit(pending: _PendingRefund | None, day: str) -> int:
    """The deferred refund that counts against `day`'s quota (none once the day has turned)."""
    return pending.tokens if pending and pending.day == day else 0


def _day_reset_ms(now_ms: int) -> int:
    return 86_400_000 - now_ms % 86_400_000


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
    ) -> Admission:
        """Charge one request and `tokens` reserved tokens to `principal`, atomically, or raise RateLimited."""
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
        # Claim this caller's deferred refund: only this admission may spend it (two concurrent admissions using
        # the same credit would give it back twice). Put back unless the admission write landed.
        with self._lock:
            claim: list[_PendingRefund | None] = [self._pending.pop(principal, None)]
        try:
            return self._admit_loop(
                principal, allowance, tokens, now_ms, live_clock, claim, model=model, model_rpm=model_rpm
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
            if allowance.max_concurrent is not None:
                inf = e.name("inflight")
                e.conds.append(f"(attribute_not_exists({inf}) OR {inf} < {e.val('kmax', allowance.max_concurrent)})")
                e.adds.append(f"{inf} {e.val('one', 1)}")
                e.sets.append(f"{e.name('inflight_at')} = {e.val('inf_now', now_ms)}")
            e.sets.append(f"{e.name('expires_at')} = {e.val('ttl', now_ms // 1000 + _TTL_SECONDS)}")
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
                    self._explain_refusal(item, allowance, tokens, now_ms, day, tpm_credit, day_credit)
                except RateLimited:
                    present = int(time.time() * 1000)
                    if not live_clock or present <= now_ms:
                        raise
                    now_ms, day = present, utc_day(present)
                    day_credit = _day_credit(pending, day)  # the day may have turned; the minute bucket's credit not
                    self._explain_refusal(item, allowance, tokens, now_ms, day, tpm_credit, day_credit)
                if attempt:
                    # A hot caller: several containers raced for the same item. A short jittered pause lets the
                    # winners land, so retries do not collide again in lockstep.
                    time.sleep(random.uniform(0, 0.002 * attempt))  # noqa: S311 - jitter, not security
                continue  # every dimension would admit: the hint was wrong or the item moved; try the right cases
            self._remember(pk, new)
            claim[0] = None  # the refund landed with this write
            states = self._states(new, allowance, now_ms, day)
            if model is not None and model_rpm is not None:
                try:
                    writes += self._admit_model(model, model_rpm, now_ms)
                except RateLimited:
                    self.settle(
                        Admission(principal, tokens, day, tpm.capacity, allowance.max_concurrent is not None),
                        actual_tokens=0,
                        refund_request=True,
                        requests_capacity=rpm.capacity,
                    )
                    raise
            return Admission(principal, tokens, day, tpm.capacity, allowance.max_concurrent is not None, states, writes)
        # Persistent contention: refuse rather than loop; the client retries shortly.
        self._refuse("requests", 1000, "The request could not be admitted under contention. Retry shortly.")
        raise AssertionError("unreachable")

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
    ) -> int:
        """Replace the reservation by the real usage (a failed call passes 0: everything reserved comes back).

        With `defer_refund`, unused tokens of a successful call are not written now but given back inside this
        caller's next admission write (or by `flush_pending` within seconds). Refunds only ever lower a charge, so
        deferring one can refuse early, never admit too much. Extra usage (actual above the reservation), in-flight
        slots and failed calls are always settled at once. Returns the number of writes."""
        delta = actual_tokens - admission.reserved_tokens
        if delta == 0 and not admission.concurrency and not refund_request:
            return 0
        if defer_refund and delta < 0 and actual_tokens > 0 and not admission.concurrency and not refund_request:
            return self._defer(admission, -delta)
        e = _Expr()
        conds: list[str] = []
        if delta:
            ts, tc, d, du = e.name("tpm_s"), e.name("tpm_cap"), e.name("day"), e.name("day_used")
            e.sets.append(f"{ts} = {ts} + {e.val('dts', delta * 60_000)}")
            e.sets.append(f"{du} = {du} + {e.val('dd', delta)}")
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
            # The limits changed, the day rolled over, or the in-flight count was reset since admission: settle the
            # parts that still apply, one at a time.
            writes = 1
            item = failed.item or {}
            if delta and item.get("tpm_cap") == admission.tokens_capacity and item.get("day") == admission.day:
                writes += self._settle_part(admission, delta, concurrency=False)
            elif delta and item.get("day") == admission.day:
                # The minute limit changed (a risk tightening, a policy push): its bucket refills on its own, but
                # the day's count is the caller's quota and is compared with the audit; it is settled all the same.
                writes += self._settle_day(admission, delta)
            if admission.concurrency and (_int(item, "inflight") or 0) > 0:
                writes += self._settle_part(admission, 0, concurrency=True)
            return writes
        self._remember(pk, new)
        return 1

    def _settle_day(self, admission: Admission, delta: int) -> int:
        """Settle `delta` tokens on the day's count alone (the minute bucket's capacity changed since admission)."""
        e = _Expr()
        d, du = e.name("day"), e.name("day_used")
        e.sets.append(f"{du} = {du} + {e.val('dd', delta)}")
        e.conds.append(f"{d} = {e.val('day', admission.day)}")
        try:
            self._remember("lim#" + admission.principal, self._update("lim#" + admission.principal, e))
        except (ConditionFailed, StoreUnavailable):
            return 0  # the day turned meanwhile: yesterday's count no longer limits anything
        return 1

    def _settle_part(self, admission: Admission, delta: int, *, concurrency: bool) -> int:
        """Settle only the tokens (`delta`) or only the in-flight slot of an admission."""
        part = Admission(
            admission.principal, admission.reserved_tokens, admission.day, admission.tokens_capacity, concurrency
        )
        try:
            self.settle(part, actual_tokens=admission.reserved_tokens + delta)
        except (ConditionFailed, StoreUnavailable):
            return 0
        return 1

    def _defer(self, admission: Admission, refund: int) -> int:
        now_ms = int(time.time() * 1000)
        flush: _PendingRefund | None = None
        with self._lock:
            old = self._pending.get(admission.principal)
            if old and old.day == admission.day and old.tokens_capacity == admission.tokens_capacity:
                old.tokens += refund
                return 0
            flush = old
            self._pending[admission.principal] = _PendingRefund(
                refund, admission.day, admission.tokens_capacity, now_ms
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
            return self.settle(Admission(principal, refund.tokens, refund.day, refund.tokens_capacity, False), 0)
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
