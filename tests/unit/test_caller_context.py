"""The caller context is the one contract between the authorizer and the validator (bulwark.auth.context).

It survives API Gateway's flattening to strings unchanged, and a refusal travels typed: the validator rebuilds the
same error class, code, message and Retry-After, and anything it cannot rebuild is refused (fail closed).
"""

from __future__ import annotations

import pytest

from bulwark.auth.context import CallerContext
from bulwark.errors import (
    ERROR_CLASSES,
    CredentialNotAllowed,
    ExpiredCredentials,
    IpNotAllowed,
    PermissionDenied,
    RevokedCredentials,
    RoleNotAllowed,
    RouteNotAllowed,
    TooManyFailedAttempts,
)


def through_api_gateway(context: CallerContext) -> CallerContext:
    """What the validator reads: the authorizer's context as strings, plus what API Gateway adds."""
    flat = context.to_context()
    assert all(isinstance(v, str) for v in flat.values())
    return CallerContext.model_validate({**flat, "principalId": context.principal, "integrationLatency": 12})


def test_an_allowed_caller_round_trips() -> None:
    sent = CallerContext(
        principal="key:abc",
        kind="api_key",
        key_id="abc",
        tenant="acme",
        role="developer",
        expires_at=4_102_444_800,
        limit_overrides={"requests_per_minute": 5},
        risk_score=25,
        risk_action="flag",
        risk_reasons="new_network",
    )
    received = through_api_gateway(sent)
    assert received.model_dump(exclude={"principalId"}) == sent.model_dump(exclude={"principalId"})
    assert received.refusal_error() is None


@pytest.mark.parametrize(
    "error",
    [
        ExpiredCredentials(),
        RevokedCredentials(),
        IpNotAllowed(),
        RouteNotAllowed(),
        RoleNotAllowed(),
        CredentialNotAllowed(),
        TooManyFailedAttempts(retry_after=120),
    ],
)
def test_a_refusal_is_rebuilt_as_the_same_typed_error(error: PermissionDenied) -> None:
    rebuilt = through_api_gateway(CallerContext.refused("key:abc", error)).refusal_error()
    assert type(rebuilt) is type(error) and type(error).__name__ in ERROR_CLASSES
    assert rebuilt is not None and rebuilt.to_body() == error.to_body() and rebuilt.headers == error.headers


def test_an_unknown_refusal_class_is_refused_not_allowed() -> None:
    forged = CallerContext(principal="key:abc", refusal="whatever", refusal_class="NoSuchError")
    rebuilt = forged.refusal_error()
    assert isinstance(rebuilt, PermissionDenied) and rebuilt.code == "access_denied"


def test_a_retry_after_is_never_below_one_second() -> None:
    context = CallerContext(
        principal="key:abc", refusal="too_many_failed_attempts", refusal_class="TooManyFailedAttempts"
    )
    rebuilt = context.refusal_error()
    assert rebuilt is not None and rebuilt.headers["Retry-After"] == "1"
