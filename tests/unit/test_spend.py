"""Money arithmetic: prices, costs, budgets and periods are exact integers; the policy validates prices and budgets."""

from __future__ import annotations

import calendar

import pytest

from bulwark.limits.spend import (
    Price,
    day_end_ms,
    micros_to_usd,
    month_end_ms,
    parse_budget,
    soft_crossed,
    usd_to_micros,
)
from bulwark.policy import PolicyError, parse_policy

POLICY = """
version: 1
models:
  demo-echo:
    upstream: {kind: demo}
  priced:
    upstream: {kind: demo}
    price: {input_per_million_usd: 0.15, output_per_million_usd: "0.6"}
  unpriced:
    upstream: {kind: demo}
roles:
  developer: {models: ["*"]}
tenants:
  acme:
    budget: {day_usd: 10, month_usd: 200.5}
"""


def test_cost_is_exact_and_rounds_up_to_a_micro_dollar() -> None:
    price = Price(usd_to_micros("0.15"), usd_to_micros("0.60"))
    assert price.cost_micros(1_000_000, 0) == 150_000
    assert price.cost_micros(1, 0) == 1  # 0.15 micro-dollars: rounded up, never down to free
    assert price.cost_micros(0, 0) == 0
    # a million requests of 7 prompt and 3 completion tokens cost what one request of 7M + 3M costs, within rounding
    one = price.cost_micros(7, 3)
    assert one == 3  # (7 * 0.15 + 3 * 0.6) = 2.85 -> 3
    assert sum(price.cost_micros(7, 3) for _ in range(1000)) == 3000  # integers: no float drift


def test_dollar_amounts_convert_exactly_or_not_at_all() -> None:
    assert usd_to_micros("50") == 50_000_000
    assert usd_to_micros("0.000001") == 1
    assert micros_to_usd(2_500_000) == "2.5"
    with pytest.raises(ValueError, match="6 decimals"):
        usd_to_micros("0.0000001")
    with pytest.raises(ValueError):
        usd_to_micros("-1")
    with pytest.raises(ValueError):
        usd_to_micros("NaN")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50/month", (50_000_000, "month")), ("2.5/day", (2_500_000, "day")), ("$1/day", (1_000_000, "day"))],
)
def test_budget_text(text: str, expected: tuple[int, str]) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["50", "50/week", "0/day", "abc/day", "1.0000001/day"])
def test_bad_budget_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_budget(text)


def test_periods_end_at_utc_midnight_and_the_first_of_the_next_month() -> None:
    now = calendar.timegm((2031, 12, 31, 23, 59, 59, 0, 0, 0)) * 1000 + 500
    assert day_end_ms(now) == calendar.timegm((2032, 1, 1, 0, 0, 0, 0, 0, 0)) * 1000
    assert month_end_ms(now) == day_end_ms(now)
    feb = calendar.timegm((2032, 2, 10, 12, 0, 0, 0, 0, 0)) * 1000
    assert month_end_ms(feb) == calendar.timegm((2032, 3, 1, 0, 0, 0, 0, 0, 0)) * 1000


def test_soft_threshold_fires_once_when_crossed() -> None:
    assert soft_crossed(79, 80, 100, 80)
    assert not soft_crossed(80, 90, 100, 80)
    assert not soft_crossed(10, 79, 100, 80)


def test_policy_prices_override_the_defaults_and_unknown_models_are_free() -> None:
    policy = parse_policy(POLICY, local=True)
    assert policy.price_of("priced") == Price(150_000, 600_000)
    assert policy.price_of("demo-echo") == Price(1_000_000, 2_000_000)  # the built-in default
    assert policy.price_of("unpriced").cost_micros(10**6, 10**6) == 0
    assert policy.tenants["acme"].budget.micros() == (10_000_000, 200_500_000)
    assert policy.spend.soft_threshold_percent == 80


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("price: {input_per_million_usd: -1, output_per_million_usd: 1}", "input_per_million_usd"),
        ("price: {input_per_million_usd: 0.0000001, output_per_million_usd: 1}", "input_per_million_usd"),
        ("price: {input_per_million_usd: 1}", "output_per_million_usd"),
    ],
)
def test_bad_prices_are_refused_with_the_field_named(bad: str, field: str) -> None:
    text = POLICY.replace('price: {input_per_million_usd: 0.15, output_per_million_usd: "0.6"}', bad)
    with pytest.raises(PolicyError, match=field):
        parse_policy(text, local=True)


def test_keys_create_refuses_a_malformed_budget_before_touching_any_store(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from bulwark_dev.cli import EXIT_ERROR, main

    code = main(["keys", "create", "--name", "n", "--role", "developer", "--budget", "5/week"], out=io.StringIO())
    assert code == EXIT_ERROR
    assert "--budget 5/week: a budget is AMOUNT/day or AMOUNT/month" in capsys.readouterr().err
