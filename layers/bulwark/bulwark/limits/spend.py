"""Money: prices per model, a request's cost, budget periods. Integer micro-dollars throughout (no float drift).

A price is US dollars per million tokens; it is held as integer micro-dollars per million tokens, so a request's
cost is exact integer arithmetic: ceil((prompt * input + completion * output) / 1e6) micro-dollars. Rounding up per
request means the reservation (prompt estimate + max_tokens at the output price) is never below the settled cost of a
call that used no more tokens than it reserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

MICROS_PER_USD = 1_000_000
Period = Literal["day", "month"]

# Defaults for the models the shipped policy names (the policy file overrides them per model). The demo model has a
# nominal price so budgets can be seen working on `bulwark local`.
DEFAULT_PRICES_USD_PER_MILLION: dict[str, tuple[str, str]] = {
    "demo-echo": ("1.00", "2.00"),
}


def usd_to_micros(value: Decimal | str | int, *, what: str = "amount") -> int:
    """Exact conversion of a dollar amount (at most 6 decimals) to micro-dollars; refuses what would round."""
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what} must be a number of US dollars, e.g. 12.50") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of US dollars")
    micros = d * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"{what} has more than 6 decimals (finer than a micro-dollar)")
    return int(micros)


def micros_to_usd(micros: int) -> str:
    """'0.000123' style, exact."""
    return f"{Decimal(micros) / MICROS_PER_USD:f}"


@dataclass(frozen=True)
class Price:
    """Micro-dollars per million tokens, input and output."""

    input_micros_per_million: int
    output_micros_per_million: int

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        total = prompt_tokens * self.input_micros_per_million + completion_tokens * self.output_micros_per_million
        return -(-total // 1_000_000)  # ceiling division: exact, and never below the true cost


FREE = Price(0, 0)


def parse_budget(text: str) -> tuple[int, Period]:
    """'50/month' or '2.5/day' -> (micro-dollars, period); errors say what is expected."""
    amount, sep, period = text.strip().partition("/")
    if not sep or period not in ("day", "month"):
        raise ValueError("a budget is AMOUNT/day or AMOUNT/month in US dollars, e.g. 50/month")
    micros = usd_to_micros(amount.strip().lstrip("$"), what="budget")
    if micros <= 0:
        raise ValueError("a budget must be more than zero dollars")
    return micros, period  # type: ignore[return-value]  # checked against the two literals above


def utc_day(now_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now_ms // 1000))


def day_reset_ms(now_ms: int) -> int:
    """Milliseconds until the UTC day ends (when a daily quota resets)."""
    return 86_400_000 - now_ms % 86_400_000


def day_end_ms(now_ms: int) -> int:
    return now_ms - now_ms % 86_400_000 + 86_400_000


def month_end_ms(now_ms: int) -> int:
    import calendar  # imported where used: it brings `locale`, which no function needs at init

    t = time.gmtime(now_ms // 1000)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) * 1000


def spend_expiry_s(now_ms: int, idle_ttl_s: int) -> int:
    """When (epoch seconds) an item holding spend may expire: `idle_ttl_s` after its last write, and never before its
    month is over (the month's spend must outlive a quiet caller)."""
    return max(now_ms // 1000 + idle_ttl_s, month_end_ms(now_ms) // 1000 + 86_400)


def soft_crossed(before: int, after: int, budget: int, percent: int) -> bool:
    """Whether spend moved across `percent` of `budget` (integer arithmetic: no rounding at the edge)."""
    return before * 100 < budget * percent <= after * 100
