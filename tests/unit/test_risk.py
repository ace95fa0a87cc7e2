"""Risk scoring: each signal's points, each action's threshold, and the API-key-only refusal."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bulwark.auth.risk import RiskDecision, RiskSignals, assess, score
from bulwark.policy import RiskPolicy

DEFAULT = RiskPolicy()  # flag 40, tighten 60, factor 0.25, refuse_api_keys_at None
STRICT = RiskPolicy(flag_at=20, tighten_at=40, tighten_factor=0.5, refuse_api_keys_at=60)


def key(**signals: Any) -> RiskSignals:
    return RiskSignals(credential_kind="api_key", **signals)


def test_nothing_unusual_scores_zero_and_is_allowed() -> None:
    assert assess(key(), DEFAULT) == RiskDecision(score=0, reasons=(), action="allow", limit_factor=1.0)


def test_new_network_adds_25() -> None:
    assert score(key(new_network=True)) == (25, ("new_network",))


@pytest.mark.parametrize(("failures", "points"), [(0, 0), (1, 5), (3, 15), (6, 30), (100, 30)])
def test_failures_from_ip_add_5_each_up_to_30(failures: int, points: int) -> None:
    total, reasons = score(key(recent_failures_from_ip=failures))
    assert total == points
    assert reasons == (("failures_from_ip",) if failures else ())


@pytest.mark.parametrize(
    ("ratio", "requests", "expected"),
    [
        (2.99, 50, (0, ())),
        (3.0, 50, (15, ("volume_spike",))),
        (9.99, 50, (15, ("volume_spike",))),
        (10.0, 50, (30, ("volume_surge",))),
        (50.0, 9, (0, ())),  # too few requests to mean anything
        (50.0, 10, (30, ("volume_surge",))),
        (None, 500, (0, ())),  # no history to compare with
    ],
)
def test_volume_change_scores_spike_and_surge(
    ratio: float | None, requests: int, expected: tuple[int, tuple[str, ...]]
) -> None:
    assert score(key(volume_ratio=ratio, requests_this_minute=requests)) == expected


@pytest.mark.parametrize(("days", "points"), [(None, 0), (0.0, 0), (29.9, 0), (30.0, 15), (400.0, 15)])
def test_dormant_key_adds_15(days: float | None, points: int) -> None:
    assert score(key(days_since_last_use=days))[0] == points


def test_signals_add_up_and_cap_at_100() -> None:
    everything = key(
        new_network=True,
        recent_failures_from_ip=50,
        volume_ratio=100.0,
        requests_this_minute=1000,
        days_since_last_use=365.0,
    )
    assert score(everything) == (100, ("new_network", "failures_from_ip", "volume_surge", "dormant_key"))


@pytest.mark.parametrize(
    ("signals", "action", "factor"),
    [
        (key(new_network=True, recent_failures_from_ip=2), "allow", 1.0),  # 35
        (key(new_network=True, recent_failures_from_ip=3), "flag", 1.0),  # 40: flag_at
        (key(new_network=True, recent_failures_from_ip=6), "flag", 1.0),  # 55
        (key(new_network=True, volume_ratio=4.0, requests_this_minute=20, days_since_last_use=90.0), "flag", 1.0),  # 55
        (key(new_network=True, volume_ratio=3.0, requests_this_minute=20, recent_failures_from_ip=4), "tighten", 0.25),
    ],
)
def test_default_policy_thresholds(signals: RiskSignals, action: str, factor: float) -> None:
    decision = assess(signals, DEFAULT)
    assert (decision.action, decision.limit_factor) == (action, factor)


def test_default_policy_never_refuses_api_keys() -> None:
    worst = key(new_network=True, recent_failures_from_ip=9, volume_ratio=99.0, requests_this_minute=99)
    assert assess(worst, DEFAULT).action == "tighten"


@pytest.mark.parametrize(
    ("signals", "points", "action", "factor"),
    [
        (key(recent_failures_from_ip=3), 15, "allow", 1.0),
        (key(recent_failures_from_ip=4), 20, "flag", 1.0),  # flag_at
        (key(new_network=True, recent_failures_from_ip=2), 35, "flag", 1.0),
        (key(new_network=True, recent_failures_from_ip=3), 40, "tighten", 0.5),  # tighten_at
        (key(new_network=True, recent_failures_from_ip=6), 55, "tighten", 0.5),
        (
            key(new_network=True, recent_failures_from_ip=4, volume_ratio=3.0, requests_this_minute=10),
            60,
            "refuse_api_key",
            0.0,
        ),
    ],
)
def test_each_threshold_is_inclusive(signals: RiskSignals, points: int, action: str, factor: float) -> None:
    decision = assess(signals, STRICT)
    assert (decision.score, decision.action, decision.limit_factor) == (points, action, factor)


def test_api_key_is_refused_at_refuse_api_keys_at() -> None:
    signals = key(new_network=True, recent_failures_from_ip=7)  # 25 + 30 = 55
    assert assess(signals, STRICT).action == "tighten"
    signals = key(new_network=True, recent_failures_from_ip=7, days_since_last_use=31.0)  # 70
    decision = assess(signals, STRICT)
    assert (decision.score, decision.action, decision.limit_factor) == (70, "refuse_api_key", 0.0)
    assert decision.reasons == ("new_network", "failures_from_ip", "dormant_key")


def test_jwt_is_never_refused_only_tightened() -> None:
    signals = RiskSignals(credential_kind="jwt", new_network=True, recent_failures_from_ip=7, days_since_last_use=31.0)
    decision = assess(signals, STRICT)
    assert (decision.score, decision.action, decision.limit_factor) == (70, "tighten", 0.5)


def test_refuse_threshold_below_tighten_applies_to_api_keys_first() -> None:
    policy = RiskPolicy(flag_at=10, tighten_at=80, refuse_api_keys_at=25)
    assert assess(key(new_network=True), policy).action == "refuse_api_key"
    assert assess(RiskSignals(credential_kind="jwt", new_network=True), policy).action == "flag"


def test_flag_at_zero_flags_everything() -> None:
    assert assess(key(), RiskPolicy(flag_at=0)).action == "flag"


def test_assessment_is_deterministic() -> None:
    signals = key(new_network=True, recent_failures_from_ip=4, volume_ratio=5.0, requests_this_minute=30)
    assert len({assess(signals, STRICT) for _ in range(10)}) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"recent_failures_from_ip": -1},
        {"requests_this_minute": -5},
        {"volume_ratio": math.nan},
        {"volume_ratio": -1.0},
        {"days_since_last_use": -0.5},
        {"days_since_last_use": math.nan},
    ],
)
def test_impossible_signals_are_a_caller_bug(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        key(**bad)


def test_unknown_credential_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="credential_kind"):
        RiskSignals(credential_kind="cookie")  # type: ignore[arg-type]
