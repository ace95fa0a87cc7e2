"""The authorizer's refusal semantics against DynamoDB Local (issue 16, items 3 and 6; the versioned pepper of item 8).

- An Allow that carries a refusal goes only to a caller who authenticated; an address outside the network lists gets
  an explicit Deny; an unreachable key store or hashing secret makes the authorizer raise (API Gateway: 503).
- Failed attempts count per source address and per key id; a valid key is verified before an address's cool-down
  refuses it; trusted CIDRs are never counted; a key id's count never refuses its valid secret.
- Key hashes name their pepper version: the pepper rotates without invalidating issued keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulwark.auth.context import CallerContext
from bulwark.auth.decision import Authorizer, Unauthorized
from bulwark.auth.key_admin import KeyAdmin
from bulwark.auth.keys import new_api_key
from bulwark.auth.pepper import Pepper, create_local_pepper_file
from bulwark.errors import StoreUnavailable, TooManyFailedAttempts
from bulwark.policy import FailedAuthPolicy, NetworkPolicy, Policy, default_policy_path, load_policy_file
from bulwark.settings import Settings
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeysTable
from tests.integration.test_key_lifecycle import ARN, Clock, event

pytestmark = pytest.mark.integration
THRESHOLD = 3


def make_policy(**network: Any) -> Policy:
    base = load_policy_file(default_policy_path())
    failed = FailedAuthPolicy(
        threshold=THRESHOLD,
        key_threshold=THRESHOLD,
        window_seconds=300,
        cooldown_seconds=900,
        trusted_cidrs=network.pop("trusted_cidrs", ()),
    )
    return base.model_copy(update={"network": NetworkPolicy(failed_auth=failed, **network)})


class Env:
    def __init__(self, ddb: Any, tables: dict[str, str], tmp: Path, policy: Policy) -> None:
        self.secret = tmp / "hmac.key"
        create_local_pepper_file(self.secret)
        self.cfg = Settings(
            keys_table=tables["KeysTable"], counters_table=tables["CountersTable"], hmac_secret_file=str(self.secret)
        )
        self.ddb = ddb
        self.keys, self.counters = KeysTable(ddb, self.cfg.keys_table), CountersTable(ddb, self.cfg.counters_table)
        self.clock = Clock()
        self.policy = policy
        self.admin = KeyAdmin(self.keys, self.counters, Pepper(self.cfg))
        self.authz = self.authorizer()

    def authorizer(self, keys: KeysTable | None = None) -> Authorizer:
        return Authorizer(
            policy=lambda: self.policy,
            keys=keys or self.keys,
            counters=self.counters,
            pepper=Pepper(self.cfg),
            clock=self.clock,
        )

    def fail(self, credential: str, ip: str) -> Unauthorized:
        """One failed attempt, counted as the authorizer's handler counts it."""
        with pytest.raises(Unauthorized) as err:
            self.authz.authorize(event(credential, ip=ip))
        self.authz.record_failure(ip, err.value.key_id)
        return err.value


@pytest.fixture
def env(dynamodb_local: Any, fresh_tables: dict[str, str], tmp_path: Path) -> Env:
    return Env(dynamodb_local.wire_client(), fresh_tables, tmp_path, make_policy(trusted_cidrs=("10.20.0.0/16",)))


# ---------------------------------------------------------------------------------------------- refusal semantics


def test_a_denied_address_gets_an_explicit_deny_without_any_credential_or_store_read(env: Env) -> None:
    env.policy = make_policy(deny_cidrs=("198.51.100.0/24",))
    decision = env.authz.authorize(event(None, ip="198.51.100.9"))
    assert decision.effect == "Deny" and decision.arns == [ARN] and env.authz.store_reads == 0
    response = decision.to_response()
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert "usageIdentifierKey" not in response
    # The ACCESS_DENIED gateway response shows these two (template.yaml).
    assert (response["context"]["denied_code"], response["context"]["denied_message"]) == (
        "ip_not_allowed",
        "Requests from this source address are not allowed.",
    )


def test_outside_the_allow_list_is_a_deny_too(env: Env) -> None:
    env.policy = make_policy(allow_cidrs=("192.0.2.0/24",))
    api_key, _ = env.admin.create(name="app", role="developer")
    assert env.authz.authorize(event(api_key, ip="203.0.113.1")).effect == "Deny"
    assert env.authz.authorize(event(api_key, ip="192.0.2.1")).context.refusal == ""


def test_every_allow_with_a_refusal_names_a_caller_who_authenticated(env: Env) -> None:
    api_key, rec = env.admin.create(name="app", role="developer", allow_cidrs=("192.0.2.0/24",))
    decision = env.authz.authorize(event(api_key, ip="203.0.113.1"))
    assert decision.effect == "Allow" and decision.arns == [ARN]
    assert decision.context.principal == f"key:{rec.key_id}" and decision.context.refusal == "ip_not_allowed"
    # The refusal travels typed: the validator rebuilds the same error class from the context strings.
    rebuilt = CallerContext.model_validate(decision.to_response()["context"]).refusal_error()
    assert type(rebuilt).__name__ == "IpNotAllowed" and rebuilt is not None and rebuilt.status == 403


def test_a_key_store_outage_makes_the_authorizer_raise(env: Env) -> None:
    api_key, _ = env.admin.create(name="app", role="developer")
    broken = env.authorizer(keys=KeysTable(env.ddb, "no-such-table"))  # the store answers with an error
    with pytest.raises(StoreUnavailable):
        broken.authorize(event(api_key))


def test_an_unreadable_hashing_secret_makes_the_authorizer_raise(env: Env) -> None:
    api_key, _ = env.admin.create(name="app", role="developer")
    env.secret.unlink()
    with pytest.raises(StoreUnavailable):
        env.authorizer().authorize(event(api_key))


# ------------------------------------------------------------------------------------------------------- lockout


def test_a_valid_key_is_verified_before_the_cool_down_refuses_it(env: Env) -> None:
    api_key, rec = env.admin.create(name="app", role="developer")
    attacker = "192.0.2.50"
    for i in range(THRESHOLD + 1):
        env.fail(f"bwk_guess{i}", attacker)
    # A wrong credential from the cooled-down address stays a 401: it never gets an Allow.
    with pytest.raises(Unauthorized):
        env.authz.authorize(event(new_api_key()[0], ip=attacker))
    # Another container (no memory of the failures) learns the cool-down from the same read as the key.
    fresh = env.authorizer()
    decision = fresh.authorize(event(api_key, ip=attacker))
    assert fresh.store_reads == 1
    assert decision.context.principal == f"key:{rec.key_id}"
    error = decision.context.refusal_error()
    assert isinstance(error, TooManyFailedAttempts) and 60 < error.retry_after <= 901
    assert fresh.authorize(event(api_key, ip="192.0.2.51")).context.refusal == ""  # other addresses unaffected


def test_trusted_cidrs_are_never_counted_nor_cooled_down(env: Env) -> None:
    api_key, _ = env.admin.create(name="app", role="developer")
    nat = "10.20.3.4"
    for i in range(3 * THRESHOLD):
        env.fail(f"bwk_guess{i}", nat)
    table, key = env.counters.failure_key(nat)
    assert "Item" not in env.ddb.get_item(TableName=table, Key=key, ConsistentRead=True)
    assert env.authz.authorize(event(api_key, ip=nat)).context.refusal == ""


def test_wrong_secrets_count_per_key_id_across_addresses_and_never_lock_out_its_owner(env: Env) -> None:
    api_key, rec = env.admin.create(name="app", role="developer")
    flagged = []
    for i in range(THRESHOLD + 1):  # one attempt per address: no address reaches its own threshold
        forged, _ = new_api_key(rec.key_id)
        with pytest.raises(Unauthorized) as err:
            env.authz.authorize(event(forged, ip=f"198.51.100.{i + 1}"))
        assert err.value.key_id == rec.key_id
        flagged.append(env.authz.record_failure(f"198.51.100.{i + 1}", err.value.key_id))
    assert flagged[-1].key_id_flagged and not any(f.ip_blocked for f in flagged)
    assert not any(f.key_id_flagged for f in flagged[:THRESHOLD])
    # The owner's valid secret still works, from anywhere: the count cannot be aimed at them.
    assert env.authorizer().authorize(event(api_key, ip="203.0.113.77")).context.refusal == ""


# ---------------------------------------------------------------------------------------------- versioned pepper


def test_the_pepper_rotates_without_invalidating_issued_keys(env: Env) -> None:
    old_key, old = env.admin.create(name="before", role="developer")
    assert [h.pepper_version for h in old.hashes] == [1]
    before = env.secret.read_text()
    rotated = env.admin.pepper.rotate()
    assert rotated.current == 2 and json.loads(env.secret.read_text())["versions"]["1"] == before.strip()
    new_key, new = env.admin.create(name="after", role="developer")
    assert [h.pepper_version for h in new.hashes] == [2]
    authz = env.authorizer()  # a container that reads the rotated secret
    assert authz.authorize(event(old_key)).context.key_id == old.key_id
    assert authz.authorize(event(new_key)).context.key_id == new.key_id
    assert env.admin.pepper_versions_in_use() == {1: [old.key_id], 2: [new.key_id]}
    # `keys rotate` moves a key to the current version; once none uses version 1 it can be retired.
    moved_key, _ = env.admin.rotate(old.key_id, grace_seconds=0, now=int(env.clock.t))
    assert env.admin.pepper_versions_in_use() == {2: sorted([old.key_id, new.key_id])}
    doc = json.loads(env.secret.read_text())
    del doc["versions"]["1"]
    env.secret.write_text(json.dumps(doc))
    retired = env.authorizer()
    assert retired.authorize(event(moved_key)).context.key_id == old.key_id
    with pytest.raises(Unauthorized):
        retired.authorize(event(old_key))


def test_a_container_with_the_old_pepper_picks_up_a_new_version_at_once(env: Env) -> None:
    authz = env.authorizer()
    first_key, _ = env.admin.create(name="before", role="developer")
    assert authz.authorize(event(first_key)).context.refusal == ""  # the container has version 1 cached
    env.admin.pepper.rotate()
    new_key, rec = env.admin.create(name="after", role="developer")
    assert authz.authorize(event(new_key)).context.key_id == rec.key_id


def test_an_unreachable_jwks_endpoint_makes_the_authorizer_raise(env: Env) -> None:
    import socket
    import time

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bulwark.auth.jwks import JwksCache
    from bulwark.auth.jwt_verify import JwtVerifier
    from bulwark.errors import JwksUnavailable
    from bulwark.policy import IssuerConfig

    with socket.socket() as s:  # a free loopback port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    issuer = IssuerConfig.model_validate(  # a loopback JWKS over plain http: accepted only as `bulwark local` runs it
        {
            "name": "idp",
            "issuer": "https://issuer.example.com",
            "audience": ["bulwark-api"],
            "jwks_url": f"http://127.0.0.1:{port}/jwks.json",
            "default_role": "developer",
        },
        context={"local": True},
    )
    env.policy = env.policy.model_copy(update={"issuers": (issuer,)})
    verifier = JwtVerifier([issuer], JwksCache())
    authz = Authorizer(
        policy=lambda: env.policy,
        keys=env.keys,
        counters=env.counters,
        pepper=Pepper(env.cfg),
        jwt=lambda: verifier,
        clock=env.clock,
    )
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "bulwark-api", "sub": "u1", "iat": now, "exp": now + 300, "scope": ""}
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = pyjwt.encode(claims, signing, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(JwksUnavailable):
        authz.authorize(event(token))
