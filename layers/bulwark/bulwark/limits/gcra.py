"""Rate-limit arithmetic: exact, integer-only token buckets (GCRA) and the headers that describe them.

Each limit is "C units per window W" (requests per minute, tokens per minute). Its state is one integer S, the
bucket's *theoretical arrival time* scaled by C so every step is exact integer arithmetic (no float drift):

    now_s = now_ms * C              (time, in scaled units)
    cost  = c * W_ms                (c units consume c/C of a window)
    bucket full       <=>  S <= now_s
    admit c units     <=>  max(S, now_s) + cost <= now_s + C * W_ms
    after admission:       S' = max(S, now_s) + cost

DynamoDB update expressions cannot take max(), so the two sides are separate cases ("stale": S < now_s, the
bucket refilled completely; "busy": S >= now_s). Each case is one conditional write; the store module picks the case
from a hint and corrects itself from the item DynamoDB returns when a condition fails. No read-then-write race exists:
every decision is the condition of an atomic write.

Guarantee: no burst admits more than C units; over any window the total is at most C + (refill in that window).
Quotas (daily tokens) are plain counters per UTC day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

WINDOW_MS = 60_000
Dimension = Literal["requests", "tokens", "daily_tokens", "concurrency", "model_requests", "budget"]

ERROR_CODES: dict[Dimension, str] = {
    "requests": "requests_per_minute_exceeded",
    "tokens": "tokens_per_minute_exceeded",
    "daily_tokens": "quota_exceeded",
    "concurrency": "concurrency_exceeded",
    "model_requests": "requests_per_minute_exceeded",
    "budget": "budget_exceeded",
}

MESSAGES: dict[Dimension, str] = {
    "requests": "Rate limit reached: requests per minute for this credential.",
    "tokens": "Rate limit reached: tokens per minute for this credential.",
    "daily_tokens": "Quota reached: daily tokens for this credential.",
    "concurrency": "Too many requests in flight for this credential.",
    "model_requests": "Rate limit reached: requests per minute for this model.",
    "budget": "Budget reached: spend for this credential until the period ends.",
}


@dataclass(frozen=True)
class Bucket:
    """Capacity C units per window (default one minute)."""

    capacity: int
    window_ms: int = WINDOW_MS

    def now_scaled(self, now_ms: int) -> int:
        return now_ms * self.capacity

    def cost(self, units: int) -> int:
        return units * self.window_ms

    def is_stale(self, state: int | None, now_ms: int) -> bool:
        return state is None or state < self.now_scaled(now_ms)

    def busy_ceiling(self, units: int, now_ms: int) -> int:
        """Largest S for which a busy bucket still admits `units`."""
        return self.now_scaled(now_ms) + (self.capacity - units) * self.window_ms

    def admits(self, state: int | None, units: int, now_ms: int) -> bool:
        if units > self.capacity:
            return False
        if self.is_stale(state, now_ms):
            return True
        assert state is not None
        return state <= self.busy_ceiling(units, now_ms)

    def wait_ms(self, state: int | None, units: int, now_ms: int) -> int:
        """Milliseconds until `units` would be admitted (never earlier than the real time)."""
        if units > self.capacity:
            return self.window_ms
        if state is None:
            return 0
        excess = state - self.busy_ceiling(units, now_ms)
        return max(0, math.ceil(excess / self.capacity))

    def remaining(self, state: int | None, now_ms: int) -> int:
        if self.is_stale(state, now_ms):
            return self.capacity
        assert state is not None
        used = math.ceil((state - self.now_scaled(now_ms)) / self.window_ms)
        return max(0, self.capacity - used)

    def reset_ms(self, state: int | None, now_ms: int) -> int:
        """Milliseconds until the bucket is full again."""
        if self.is_stale(state, now_ms):
            return 0
        assert state is not None
        return math.ceil((state - self.now_scaled(now_ms)) / self.capacity)


@dataclass(frozen=True)
class LimitState:
    """What a response tells the client about one limit."""

    name: Literal["rpm", "tpm", "tpd"]
    limit: int
    remaining: int
    reset_ms: int
    window_s: int


def retry_after_seconds(wait_ms: int) -> int:
    return max(1, math.ceil(wait_ms / 1000))


def _duration(ms: int) -> str:
    """OpenAI-style reset duration: '1s', '6m0s', '120ms'."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    s = math.ceil(ms / 1000)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s}s"
    h, m = divmod(m, 60)
    return f"{h}h{m}m{s}s"


def rate_limit_headers(states: list[LimitState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* and the IETF draft's RateLimit-Policy / RateLimit (structured fields)."""
    headers: dict[str, str] = {}
    by = {s.name: s for s in states}
    if rpm := by.get("rpm"):
        headers["x-ratelimit-limit-requests"] = str(rpm.limit)
        headers["x-ratelimit-remaining-requests"] = str(rpm.remaining)
        headers["x-ratelimit-reset-requests"] = _duration(rpm.reset_ms)
    if tpm := by.get("tpm"):
        headers["x-ratelimit-limit-tokens"] = str(tpm.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tpm.remaining)
        headers["x-ratelimit-reset-tokens"] = _duration(tpm.reset_ms)
    if states:
        headers["RateLimit-Policy"] = ", ".join(f'"{s.name}";q={s.limit};w={s.window_s}' for s in states)
        headers["RateLimit"] = ", ".join(f'"{s.name}";r={s.remaining};t={math.ceil(s.reset_ms / 1000)}' for s in states)
    return headers
