"""Risk-adaptive checks: a score from 0 to 100 for every authenticated request, and what the role's policy does with it.

Pure and deterministic: the caller gathers the signals (it owns the storage), `assess()` adds up fixed points and
applies the thresholds of the role's `risk` policy. Every point has a reason code, so each decision can be explained
in a log line or a metric dimension.

Signals (points are added, the total is capped at 100):

| reason code        | signal                                                                   | points |
|--------------------|--------------------------------------------------------------------------|--------|
| `new_network`      | the credential is used from a network (/24 for IPv4, /48 for IPv6) not   | 25     |
|                    | seen for it recently; False for a credential with no history yet        |        |
| `failures_from_ip` | failed credential attempts from the source IP in the failed-auth window  | 5 each, at most 30 |
| `volume_spike`     | requests this minute ≥ 3 x the credential's recent per-minute average    | 15     |
| `volume_surge`     | … ≥ 10 x that average (replaces `volume_spike`)                          | 30     |
|                    | (volume counts only from 10 requests in the minute, and only when there  |        |
|                    | is an average to compare with, so a quiet key's first calls never score)  |        |
| `dormant_key`      | the credential was last used 30 days ago or more                         | 15     |

Actions, from the role's `risk` policy (`RiskPolicy`), the most severe that applies:

| action           | when                                                            | limit_factor           |
|------------------|-----------------------------------------------------------------|------------------------|
| `refuse_api_key` | score ≥ `refuse_api_keys_at` (if set) and the credential is an  | 0.0 (request refused:  |
|                  | API key: the role then requires a JWT (which can carry MFA)     | present a JWT instead) |
| `tighten`        | score ≥ `tighten_at`                                            | `tighten_factor`       |
| `flag`           | score ≥ `flag_at`                                               | 1.0                    |
| `allow`          | otherwise                                                       | 1.0                    |

Every action other than `allow` is meant to be logged with its reasons and counted as a metric. `limit_factor`
multiplies the role's rate limits for this request (e.g. 0.25 turns 60 requests per minute into 15).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bulwark.policy import RiskPolicy

CredentialKind = Literal["api_key", "jwt"]
RiskAction = Literal["allow", "flag", "tighten", "refuse_api_key"]

NEW_NETWORK_POINTS = 25
FAILURE_POINTS = 5
FAILURE_POINTS_MAX = 30
VOLUME_SPIKE_RATIO = 3.0
VOLUME_SPIKE_POINTS = 15
VOLUME_SURGE_RATIO = 10.0
VOLUME_SURGE_POINTS = 30
VOLUME_MIN_REQUESTS = 10
DORMANT_DAYS = 30.0
DORMANT_POINTS = 15


@dataclass(frozen=True)
class RiskSignals:
    """What the caller observed about this request. Defaults mean "nothing unusual"."""

    credential_kind: CredentialKind
    new_network: bool = False
    recent_failures_from_ip: int = 0
    volume_ratio: float | None = None  # requests this minute / recent per-minute average; None: no history
    requests_this_minute: int = 0
    days_since_last_use: float | None = None  # None: never used before, or unknown

    def __post_init__(self) -> None:
        # A negative count or a NaN ratio is a bug in the caller; refuse it rather than score it as "safe".
        if self.credential_kind not in ("api_key", "jwt"):
            raise ValueError("credential_kind must be 'api_key' or 'jwt'")
        if self.recent_failures_from_ip < 0 or self.requests_this_minute < 0:
            raise ValueError("counts cannot be negative")
        for name in ("volume_ratio", "days_since_last_use"):
            value = getattr(self, name)
            if value is not None and (math.isnan(value) or value < 0):
                raise ValueError(f"{name} must be a non-negative number")


@dataclass(frozen=True)
class RiskDecision:
    score: int  # 0..100
    reasons: tuple[str, ...]  # reason codes, in table order
    action: RiskAction
    limit_factor: float  # multiplier for the role's rate limits on this request


def score(signals: RiskSignals) -> tuple[int, tuple[str, ...]]:
    """The risk score and the reason codes behind it."""
    points = 0
    reasons: list[str] = []
    if signals.new_network:
        points += NEW_NETWORK_POINTS
        reasons.append("new_network")
    if signals.recent_failures_from_ip > 0:
        points += min(FAILURE_POINTS_MAX, FAILURE_POINTS * signals.recent_failures_from_ip)
        reasons.append("failures_from_ip")
    ratio = signals.volume_ratio
    if ratio is not None and signals.requests_this_minute >= VOLUME_MIN_REQUESTS:
        if ratio >= VOLUME_SURGE_RATIO:
            points += VOLUME_SURGE_POINTS
            reasons.append("volume_surge")
        elif ratio >= VOLUME_SPIKE_RATIO:
            points += VOLUME_SPIKE_POINTS
            reasons.append("volume_spike")
    if signals.days_since_last_use is not None and signals.days_since_last_use >= DORMANT_DAYS:
        points += DORMANT_POINTS
        reasons.append("dormant_key")
    return min(100, points), tuple(reasons)


def assess(signals: RiskSignals, policy: RiskPolicy) -> RiskDecision:
    """Score the signals and pick the most severe action the role's risk policy calls for."""
    total, reasons = score(signals)
    action: RiskAction
    factor = 1.0
    if (
        signals.credential_kind == "api_key"
        and policy.refuse_api_keys_at is not None
        and total >= policy.refuse_api_keys_at
    ):
        action, factor = "refuse_api_key", 0.0
    elif total >= policy.tighten_at:
        action, factor = "tighten", policy.tighten_factor
    elif total >= policy.flag_at:
        action = "flag"
    else:
        action = "allow"
    return RiskDecision(score=total, reasons=reasons, action=action, limit_factor=factor)
