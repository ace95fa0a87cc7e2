"""API keys end to end against DynamoDB Local: create, verify, rotate with grace, revoke, expire, canary, CIDR.

The authorizer runs in-process with real API Gateway REQUEST events (events/ holds the same shape) and a controllable
clock, so time-based rules (grace, expiry, the revocation bound) are tested without sleeping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulwark.api.events import AuthorizerRequestEvent
from bulwark.auth.decision import CACHE_SECONDS, Authorizer, Unauthorized
from bulwark.auth.key_admin import KeyAdmin
from bulwark.auth.pepper import Pepper, create_local_pepper_file
from bulwark.errors import RevokedCredentials
from bulwark.policy import Policy, default_policy_path, load_policy_file
from bulwark.settings import Settings
from bulwark.store.counters_table import Allowance, CountersTable
from bulwark.store.keys_table import KeysTable

pytestmark = pytest.mark.integration
ARN = "arn:aws:execute-api:us-east-1:000000000000:abc123/v1api/POST/v1/chat/completions"


class Clock:
    # In 2033: items written with this clock carry TTLs DynamoDB Local's sweeper (which deletes expired items within
    # about a second) must not reach while a test runs.
    def __init__(self, t: float = 2_000_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def event(
    credential: str | None = None,
    *,
    header: str = "Authorization",
    ip: str = "203.0.113.10",
    query: dict[str, str] | None = None,
) -> AuthorizerRequestEvent:
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if credential is not None:
        headers[header] = f"Bearer {credential}" if header == "Authorization" else credential
    return AuthorizerRequestEvent.model_validate(
        {
            "type": "REQUEST",
            "methodArn": ARN,
            "resource": "/v1/chat/completions",
            "path": "/v1/chat/completions",
            "httpMethod": "POST",
            "headers": headers,
            "queryStringParameters": query,
            "requestContext": {
                "requestId": "r-1",
                "identity": {"sourceIp": ip},
                "httpMethod": "POST",
                "resourcePath": "/v1/chat/completions",
            },
        }
    )


@pytest.fixture
def env(dynamodb_local: Any, fresh_tables: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "hmac.key"
    create_local_pepper_file(secret)
    cfg = Settings(
        keys_table=fresh_tables["KeysTable"], counters_table=fresh_tables["CountersTable"], hmac_secret_file=str(secret)
    )
    ddb = dynamodb_local.wire_client()  # what the authorizer uses
    keys, counters = KeysTable(ddb, cfg.keys_table), CountersTable(ddb, cfg.counters_table)
    clock = Clock()
    policy: Policy = load_policy_file(default_policy_path())
    authz = Authorizer(policy=lambda: policy, keys=keys, counters=counters, pepper=Pepper(cfg), clock=clock)
    admin = KeyAdmin(keys, counters, Pepper(cfg))
    return {"authz": authz, "admin": admin, "clock": clock, "keys": keys, "counters": counters}


def test_created_key_is_stored_only_as_a_keyed_hash(
    env: dict[str, Any], dynamodb_local: Any, fresh_tables: dict[str, str]
) -> None:
    api_key, rec = env["admin"].create(name="app", role="developer")
    raw = dynamodb_local.boto3_client().scan(TableName=fresh_tables["KeysTable"])["Items"]
    dump = json.dumps(raw)
    assert rec.key_id in dump
    assert api_key not in dump and api_key.split("_")[2] not in dump


def test_valid_key_is_allowed_with_context_and_only_its_routes(env: dict[str, Any]) -> None:
    api_key, rec = env["admin"].create(name="app", role="partner", tenant="acme")
    decision = env["authz"].authorize(event(api_key))
    assert decision.context.principal == f"key:{rec.key_id}"
    assert decision.context.role == "partner" and decision.context.tenant == "acme"
    assert api_key not in json.dumps(decision.to_response())
    arns = decision.to_response()["policyDocument"]["Statement"][0]["Resource"]
    assert any(a.endswith("/POST/v1/chat/completions") for a in arns)
    assert not any("/invoke" in a for a in arns)  # partner may not use the invoke route: a cached allow can't open it


def test_x_api_key_header_works_and_two_different_credentials_are_refused(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer")
    assert env["authz"].authorize(event(api_key, header="x-api-key")).context.role == "developer"
    other, _ = env["admin"].create(name="other", role="developer")
    ev = event(api_key)
    ev.headers["x-api-key"] = other  # type: ignore[index]
    with pytest.raises(Unauthorized) as err:
        env["authz"].authorize(ev)
    assert err.value.reason == "two_different_credentials"


def test_credential_in_query_string_is_refused(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer")
    with pytest.raises(Unauthorized) as err:
        env["authz"].authorize(event(api_key, query={"api_key": api_key}))
    assert err.value.reason == "credential_in_query_string"


def test_malformed_and_mistyped_keys_never_touch_the_store(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer")
    typo = api_key[:-1] + ("a" if api_key[-1] != "a" else "b")
    for bad in (typo, "bwk_short", "bwk_" + "x" * 70):
        with pytest.raises(Unauthorized):
            env["authz"].authorize(event(bad))
    assert env["authz"].store_reads == 0


def test_wrong_secret_for_a_real_key_id_is_the_same_401(env: dict[str, Any]) -> None:
    from bulwark.auth import keys as keyfmt

    _, rec = env["admin"].create(name="app", role="developer")
    forged, _ = keyfmt.new_api_key(rec.key_id)
    with pytest.raises(Unauthorized) as err:
        env["authz"].authorize(event(forged))
    assert err.value.reason == "wrong_secret"


def test_one_store_read_per_uncached_check_and_none_when_cached(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer")
    env["authz"].authorize(event(api_key))
    env["authz"].authorize(event(api_key))
    assert env["authz"].store_reads == 1
    env["clock"].t += CACHE_SECONDS + 1
    env["authz"].authorize(event(api_key))
    assert env["authz"].store_reads == 2


def test_rotation_keeps_the_key_id_and_both_secrets_work_during_grace(env: dict[str, Any]) -> None:
    old, rec = env["admin"].create(name="app", role="developer")
    now = int(env["clock"].t)
    new, rotated = env["admin"].rotate(rec.key_id, grace_seconds=3600, now=now)
    assert rotated.key_id == rec.key_id and new != old
    assert env["authz"].authorize(event(new)).context.key_id == rec.key_id
    assert env["authz"].authorize(event(old)).context.key_id == rec.key_id
    env["clock"].t += 3601
    with pytest.raises(Unauthorized):
        env["authz"].authorize(event(old))
    assert env["authz"].authorize(event(new)).context.key_id == rec.key_id


def test_revocation_is_immediate_for_model_calls_and_bounded_for_the_authorizer(env: dict[str, Any]) -> None:
    api_key, rec = env["admin"].create(name="app", role="developer")
    assert not env["authz"].authorize(event(api_key)).context.refusal
    env["admin"].revoke(rec.key_id, now=int(env["clock"].t))
    # Admission (every model call) checks the revocation mark in its own conditional write: refused at once.
    with pytest.raises(RevokedCredentials):
        env["counters"].admit(f"key:{rec.key_id}", Allowance(100, 10**6, 10**9), 1)
    # The authorizer's in-memory cache may still hold the allow, for at most CACHE_SECONDS.
    env["clock"].t += CACHE_SECONDS + 0.01
    assert env["authz"].authorize(event(api_key)).context.refusal == "revoked_credentials"


def test_expired_key_gets_expired_credentials_and_the_janitor_disables_it(env: dict[str, Any]) -> None:
    now = int(env["clock"].t)
    api_key, rec = env["admin"].create(name="app", role="developer", expires_in=60, now=now)
    _, soon = env["admin"].create(name="soon", role="developer", expires_in=3 * 86_400, now=now)
    env["clock"].t += 61
    assert env["authz"].authorize(event(api_key)).context.refusal == "expired_credentials"
    report = env["admin"].sweep_expiry(now=int(env["clock"].t))
    assert report["disabled"] == [rec.key_id]
    assert [k["key_id"] for k in report["expiring_soon"]] == [soon.key_id]
    assert env["keys"].get(rec.key_id).status == "disabled"
    # The hourly janitor warns once a day per key, not every hour.
    assert env["admin"].sweep_expiry(now=int(env["clock"].t) + 3600)["expiring_soon"] == []
    again = env["admin"].sweep_expiry(now=int(env["clock"].t) + 86_400)["expiring_soon"]
    assert [k["key_id"] for k in again] == [soon.key_id]


def test_canary_key_never_authorizes(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="honeytoken", role="developer", canary=True)
    with pytest.raises(Unauthorized) as err:
        env["authz"].authorize(event(api_key))
    assert err.value.reason == "canary_key"


def test_per_key_cidr_allow_list(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer", allow_cidrs=("198.51.100.0/24",))
    assert not env["authz"].authorize(event(api_key, ip="198.51.100.20")).context.refusal
    assert env["authz"].authorize(event(api_key, ip="203.0.113.9")).context.refusal == "ip_not_allowed"


def test_last_used_is_written_sparingly(env: dict[str, Any]) -> None:
    api_key, rec = env["admin"].create(name="app", role="developer")
    env["authz"].authorize(event(api_key))
    first = env["keys"].get(rec.key_id).last_used_at
    env["clock"].t += CACHE_SECONDS + 1
    env["authz"].authorize(event(api_key))
    assert first is not None and env["keys"].get(rec.key_id).last_used_at == first


def test_repeated_failures_put_the_ip_in_a_cool_down(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer")
    threshold = load_policy_file(default_policy_path()).network.failed_auth.threshold
    blocked = [env["authz"].record_failure("192.0.2.66").ip_blocked for _ in range(threshold + 1)]
    assert blocked[-1] is True and not any(blocked[:threshold])
    reads = env["authz"].store_reads
    decision = env["authz"].authorize(event(api_key, ip="192.0.2.66"))
    # The key is checked first (one read), so the cool-down's refusal goes to a caller who authenticated.
    assert env["authz"].store_reads == reads + 1
    assert decision.effect == "Allow" and decision.arns == [ARN]
    assert decision.context.refusal == "too_many_failed_attempts" and decision.context.refusal_retry_after > 60


def test_risk_rises_for_a_new_network_and_the_role_policy_decides(env: dict[str, Any]) -> None:
    from bulwark.policy import RiskPolicy

    api_key, rec = env["admin"].create(name="app", role="developer")
    first = env["authz"].authorize(event(api_key, ip="198.51.100.1"))
    assert first.context.risk_score == 0 and first.context.risk_action == "allow"
    assert env["keys"].get(rec.key_id).networks == ("198.51.100.0/24",)  # remembered, once
    moved = env["authz"].authorize(event(api_key, ip="203.0.113.50"))
    assert "new_network" in moved.context.risk_reasons
    # A stricter role: refuse API keys (require a JWT) at that score.
    base = load_policy_file(default_policy_path())
    strict_role = base.roles["developer"].model_copy(
        update={"risk": RiskPolicy(flag_at=10, tighten_at=20, refuse_api_keys_at=25)}
    )
    strict = base.model_copy(update={"roles": {**base.roles, "developer": strict_role}})
    authz = Authorizer(
        policy=lambda: strict,
        keys=env["keys"],
        counters=env["counters"],
        pepper=env["admin"].pepper,
        clock=env["clock"],
    )
    refused = authz.authorize(event(api_key, ip="192.0.2.200"))
    assert refused.context.refusal == "credential_not_allowed"


def test_usage_identifier_names_the_caller_for_api_gateway_usage_plans(env: dict[str, Any]) -> None:
    from bulwark.auth.usage_plan import usage_identifier

    api_key, rec = env["admin"].create(name="app", role="developer")
    response = env["authz"].authorize(event(api_key)).to_response()
    assert response["usageIdentifierKey"] == usage_identifier(f"key:{rec.key_id}")
    assert len(response["usageIdentifierKey"]) >= 20  # API Gateway's minimum API key length
    assert api_key.split("_")[2][:20] not in response["usageIdentifierKey"]  # derived from the id, never the secret


def test_a_key_in_any_query_parameter_is_refused(env: dict[str, Any]) -> None:
    api_key, _ = env["admin"].create(name="app", role="developer")
    with pytest.raises(Unauthorized) as err:
        env["authz"].authorize(event(api_key, query={"q": api_key}))
    assert err.value.reason == "credential_in_query_string"
