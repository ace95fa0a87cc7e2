"""One test per known attack on JWT verification, named for it (in the spirit of pyjwt's tests/test_advisory.py).

Every refusal test asserts the internal reason code, so a test cannot pass because the token failed for some other,
earlier reason (a mistyped fixture would otherwise look like a working defence). Tokens are built by hand so that
malformed ones can be made; `test_token_signed_by_pyjwt_is_accepted` checks that hand-built and library-built
tokens agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from bulwark.auth import jwt_verify
from bulwark.auth.jwks import JwksCache
from bulwark.auth.jwt_verify import JwtVerifier, TokenRejectedError, VerifiedToken
from bulwark.errors import AuthenticationError, ServiceUnavailable
from bulwark.policy import IssuerConfig

NOW = 1_700_000_000
ISSUER = "https://issuer.example.com"
JWKS_URL = "https://issuer.example.com/.well-known/jwks.json"
COGNITO = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf"
COGNITO_JWKS = COGNITO + "/.well-known/jwks.json"
SINGLE = "https://single.example.com"
SINGLE_JWKS = "https://single.example.com/jwks"
DROP = object()  # marks a claim or header member to leave out

CORP = IssuerConfig(
    name="corp",
    issuer=ISSUER,
    audience=("bulwark-api",),
    jwks_url=JWKS_URL,
    algorithms=("RS256", "PS256", "ES256", "ES384"),
    leeway_seconds=30,
    roles_claim="scope",
    role_map={"models:read": "reader", "models:write": "writer"},
    tenant_claim="org",
)
COGNITO_CFG = IssuerConfig(
    name="cognito",
    issuer=COGNITO,
    audience=("client123",),
    audience_claim="client_id",
    jwks_url=COGNITO_JWKS,
    algorithms=("RS256",),
    roles_claim="cognito:groups",
    role_map={"admins": "admin", "analysts": "reader"},
    max_token_bytes=2048,
)
SINGLE_CFG = IssuerConfig(
    name="single",
    issuer=SINGLE,
    audience=("bulwark-api",),
    jwks_url=SINGLE_JWKS,
    required_claims=(),
    default_role="reader",
)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hash_for(alg: str) -> hashes.HashAlgorithm:
    return {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]


def sign(alg: str, key: Any, data: bytes) -> bytes:
    h = hash_for(alg)
    if alg.startswith("RS"):
        return bytes(key.sign(data, padding.PKCS1v15(), h))
    if alg.startswith("PS"):
        return bytes(key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h))
    if alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg.startswith("HS"):
        return hmac.new(key, data, hashlib.sha256).digest()
    raise AssertionError(alg)


def jwk_of(public: Any, kid: str, **extra: Any) -> dict[str, Any]:
    if isinstance(public, rsa.RSAPublicKey):
        nums = public.public_numbers()
        n_len = (nums.n.bit_length() + 7) // 8
        return {"kty": "RSA", "kid": kid, "n": b64u(nums.n.to_bytes(n_len, "big")), "e": b64u(b"\x01\x00\x01"), **extra}
    assert isinstance(public, ec.EllipticCurvePublicKey)
    enums = public.public_numbers()
    size = (public.curve.key_size + 7) // 8
    crv = {256: "P-256", 384: "P-384", 521: "P-521"}[public.curve.key_size]
    return {
        "kty": "EC",
        "kid": kid,
        "crv": crv,
        "x": b64u(enums.x.to_bytes(size, "big")),
        "y": b64u(enums.y.to_bytes(size, "big")),
        **extra,
    }


RsaKey = rsa.RSAPrivateKey
EcKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Keys:
    rsa: RsaKey
    ec: EcKey
    ec384: EcKey
    cognito: RsaKey
    attacker: RsaKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        cognito=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        attacker=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


class FakeFetch:
    """The JWKS endpoints, in memory; records every fetch."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls.append(url)
        return json.dumps(self.docs[url]).encode()


@pytest.fixture
def fetch(keys: Keys) -> FakeFetch:
    return FakeFetch(
        {
            JWKS_URL: {
                "keys": [
                    jwk_of(keys.rsa.public_key(), "rsa-1", use="sig"),
                    jwk_of(keys.ec.public_key(), "ec-1"),
                    jwk_of(keys.ec384.public_key(), "ec384-1"),
                ]
            },
            COGNITO_JWKS: {"keys": [jwk_of(keys.cognito.public_key(), "cog-1", alg="RS256", use="sig")]},
            SINGLE_JWKS: {"keys": [jwk_of(keys.rsa.public_key(), "only")]},
        }
    )


@pytest.fixture
def verifier(fetch: FakeFetch) -> JwtVerifier:
    return JwtVerifier([CORP, COGNITO_CFG, SINGLE_CFG], JwksCache(fetch=fetch, clock=lambda: 0.0), clock=lambda: NOW)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "bulwark-api",
        "exp": NOW + 300,
        "iat": NOW - 10,
        "scope": "models:read",
        "jti": "tok-1",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


def make_token(
    key: Any,
    payload: dict[str, Any] | str | bytes | None = None,
    *,
    alg: str = "RS256",
    kid: Any = "rsa-1",
    header: dict[str, Any] | str | bytes | None = None,
    **header_extra: Any,
) -> str:
    if header is None:
        header = {k: v for k, v in {"alg": alg, "typ": "JWT", "kid": kid, **header_extra}.items() if v is not DROP}
    payload = claims() if payload is None else payload
    h = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    p = (
        payload
        if isinstance(payload, bytes)
        else (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    )
    signing_input = f"{b64u(h)}.{b64u(p)}"
    return f"{signing_input}.{b64u(sign(alg, key, signing_input.encode()))}"


def rejected(verifier: JwtVerifier, token: str, reason: str) -> None:
    with pytest.raises(TokenRejectedError) as info:
        verifier.verify(token)
    assert info.value.reason == reason
    assert info.value.status == 401


# --- what must be accepted ---


def test_valid_rs256_token_is_accepted_with_roles_from_scope_string(verifier: JwtVerifier, keys: Keys) -> None:
    tok = make_token(keys.rsa, claims(scope="openid models:read models:write other", org="acme"))
    assert verifier.verify(tok) == VerifiedToken(
        issuer="corp",
        subject="user-1",
        roles=("reader", "writer"),
        claims_roles=("openid", "models:read", "models:write", "other"),
        tenant="acme",
        expires_at=NOW + 300,
        token_id="tok-1",
    )


def test_valid_ps256_token_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, alg="PS256")).roles == ("reader",)


def test_valid_es256_token_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.ec, alg="ES256", kid="ec-1")).subject == "user-1"


def test_valid_es384_token_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.ec384, alg="ES384", kid="ec384-1")).subject == "user-1"


def test_cognito_access_token_roles_from_groups_list_and_client_id_audience(verifier: JwtVerifier, keys: Keys) -> None:
    payload = {
        "iss": COGNITO,
        "sub": "abc-123",
        "client_id": "client123",
        "token_use": "access",
        "cognito:groups": ["analysts", "admins", "analysts", "unmapped"],
        "exp": NOW + 60,
        "iat": NOW,
    }
    got = verifier.verify(make_token(keys.cognito, payload, kid="cog-1", typ=DROP))
    assert (got.issuer, got.roles, got.claims_roles) == (
        "cognito",
        ("reader", "admin"),
        ("analysts", "admins", "unmapped"),
    )
    assert got.token_id is None and got.tenant is None


def test_token_signed_by_pyjwt_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    tok = pyjwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    assert verifier.verify(tok).subject == "user-1"
    tok = pyjwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    assert verifier.verify(tok).subject == "user-1"


def test_unmapped_roles_fall_back_to_default_role(verifier: JwtVerifier, keys: Keys) -> None:
    tok = make_token(keys.rsa, claims(iss=SINGLE, scope="nothing:mapped"), kid="only")
    assert verifier.verify(tok).roles == ("reader",)


def test_no_mapped_role_and_no_default_gives_empty_roles(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, claims(scope=DROP))).roles == ()


def test_absent_kid_with_single_key_jwks_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, claims(iss=SINGLE), kid=DROP)).issuer == "single"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "application/at+jwt", "application/jwt"])
def test_jwt_and_access_token_types_are_accepted(verifier: JwtVerifier, keys: Keys, typ: str) -> None:
    assert verifier.verify(make_token(keys.rsa, typ=typ)).subject == "user-1"


def test_audience_list_containing_a_configured_audience_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, claims(aud=["other", "bulwark-api"]))).subject == "user-1"


def test_looks_like_jwt_routes_only_three_segment_credentials(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.looks_like_jwt(make_token(keys.rsa))
    assert not verifier.looks_like_jwt("bwk_0123456789abcdef_secretpart_ck12")
    assert not verifier.looks_like_jwt("aaa.bbb")
    assert not verifier.looks_like_jwt("aaa.bbb.")
    assert not verifier.looks_like_jwt("aaa.b+b.ccc")


# --- algorithm attacks ---


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused_in_any_case(verifier: JwtVerifier, keys: Keys, alg: str) -> None:
    header = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64u(json.dumps(claims()).encode())
    rejected(verifier, f"{header}.{body}.{b64u(b'x')}", "alg_not_allowed")
    rejected(verifier, f"{header}.{body}.", "malformed")  # the classic form, with an empty signature


def test_alg_outside_issuer_allow_list_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    # RS512 is a supported algorithm and the signature is genuine, but the issuer only allows RS256/PS256/ES*.
    rejected(verifier, make_token(keys.rsa, alg="RS512"), "alg_not_allowed")


def test_alg_that_is_not_a_string_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, header={"alg": ["RS256"], "kid": "rsa-1"}), "alg_not_allowed")


def test_hs256_signed_with_the_rsa_public_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    # Key confusion (CVE-2015-9235 and kin): the public key, as PEM or as the JWK modulus, used as an HMAC secret.
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rejected(verifier, make_token(pem, alg="HS256"), "alg_not_allowed")
    n = keys.rsa.public_key().public_numbers().n.to_bytes(256, "big")
    rejected(verifier, make_token(n, alg="HS256"), "alg_not_allowed")


def test_rs256_alg_naming_an_ec_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, alg="RS256", kid="ec-1"), "key_alg_mismatch")


def test_es256_alg_naming_an_rsa_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.ec, alg="ES256", kid="rsa-1"), "key_alg_mismatch")


def test_es384_alg_naming_a_p256_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.ec384, alg="ES384", kid="ec-1"), "key_alg_mismatch")


def test_jwk_alg_member_restricts_the_algorithm(verifier: JwtVerifier, keys: Keys) -> None:
    # The Cognito key is published with "alg": "RS256"; PS256 with it is refused even if the issuer allowed PS256.
    cfg = COGNITO_CFG.model_copy(update={"algorithms": ("RS256", "PS256")})
    fetch = FakeFetch({COGNITO_JWKS: {"keys": [jwk_of(keys.cognito.public_key(), "cog-1", alg="RS256")]}})
    v = JwtVerifier([cfg], JwksCache(fetch=fetch, clock=lambda: 0.0), clock=lambda: NOW)
    payload = {"iss": COGNITO, "sub": "s", "client_id": "client123", "exp": NOW + 60, "iat": NOW}
    rejected(v, make_token(keys.cognito, payload, alg="PS256", kid="cog-1"), "key_alg_mismatch")


# --- signature attacks ---


def test_bad_signature_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    head, body, sig = make_token(keys.rsa).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    rejected(verifier, f"{head}.{body}.{b64u(bytes(raw))}", "bad_signature")


def test_tampered_payload_with_original_signature_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    head, _, sig = make_token(keys.rsa).split(".")
    forged = b64u(json.dumps(claims(scope="models:write")).encode())
    rejected(verifier, f"{head}.{forged}.{sig}", "bad_signature")


def test_token_signed_by_an_unknown_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.attacker), "bad_signature")


def test_ecdsa_psychic_signature_of_zeros_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    # CVE-2022-21449: r = s = 0 verified as valid in some ECDSA implementations.
    head, body, _ = make_token(keys.ec, alg="ES256", kid="ec-1").split(".")
    rejected(verifier, f"{head}.{body}.{b64u(bytes(64))}", "bad_signature")


def test_ecdsa_der_encoded_signature_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    head, body, _ = make_token(keys.ec, alg="ES256", kid="ec-1").split(".")
    der = keys.ec.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    rejected(verifier, f"{head}.{body}.{b64u(der)}", "bad_signature")


def test_rsa_signature_with_extra_leading_zero_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    head, body, sig = make_token(keys.rsa).split(".")
    padded = b"\x00" + base64.urlsafe_b64decode(sig + "==")
    rejected(verifier, f"{head}.{body}.{b64u(padded)}", "bad_signature")


# --- malformed input ---


@pytest.mark.parametrize(
    "shape",
    ["{h}.{p}", "{h}.{p}.{s}.{s}", "{h}.{p}.{s}.{s}.{s}", "{h}..{s}", ".{p}.{s}", "{h}.{p}.", "..", "", "{h}{p}{s}"],
)
def test_malformed_segments_are_refused(verifier: JwtVerifier, keys: Keys, shape: str) -> None:
    h, p, s = make_token(keys.rsa).split(".")
    rejected(verifier, shape.format(h=h, p=p, s=s), "malformed")


def test_padded_base64_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    h, p, s = make_token(keys.rsa, header={"alg": "RS256", "kid": "rsa-1"}).split(".")
    assert len(h) % 4  # a header that base64 would pad
    rejected(verifier, f"{h}{'=' * (-len(h) % 4)}.{p}.{s}", "bad_base64_header")


@pytest.mark.parametrize("char", ["+", "/", " ", "%"])
def test_non_url_base64_alphabet_is_refused(verifier: JwtVerifier, keys: Keys, char: str) -> None:
    h, p, s = make_token(keys.rsa).split(".")
    rejected(verifier, f"{h}.{p[:8]}{char}{p[9:]}.{s}", "bad_base64_payload")


def test_base64_of_impossible_length_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    h, p, s = make_token(keys.rsa).split(".")
    cut = p[: len(p) - (len(p) % 4) - 3]  # length % 4 == 1 cannot come from any byte string
    assert len(cut) % 4 == 1
    rejected(verifier, f"{h}.{cut}.{s}", "bad_base64_payload")


def test_non_canonical_base64_signature_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    # Same signature bytes, other spelling (unused trailing bits set): would let one token exist under two strings.
    h, p, s = make_token(keys.rsa).split(".")
    assert len(s) % 4 == 2  # 256-byte signature: the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = s[:-1] + alphabet[alphabet.index(s[-1]) ^ 0x01]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(s + "==")
    rejected(verifier, f"{h}.{p}.{twin}", "bad_base64_signature")


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe{}", b'{"alg": NaN}', b"{"])
def test_header_that_is_not_json_is_refused(verifier: JwtVerifier, keys: Keys, raw: bytes) -> None:
    rejected(verifier, make_token(keys.rsa, header=raw), "bad_header")


@pytest.mark.parametrize("raw", [b"not json", b"\xc3\x28", b'{"exp": Infinity}'])
def test_payload_that_is_not_json_is_refused(verifier: JwtVerifier, keys: Keys, raw: bytes) -> None:
    rejected(verifier, make_token(keys.rsa, raw), "bad_payload")


@pytest.mark.parametrize("raw", ['["RS256"]', '"RS256"', "null", "1"])
def test_header_that_is_not_an_object_is_refused(verifier: JwtVerifier, keys: Keys, raw: str) -> None:
    rejected(verifier, make_token(keys.rsa, header=raw), "bad_header")


def test_payload_that_is_not_an_object_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, json.dumps([claims()])), "bad_payload")


def test_duplicate_keys_in_header_are_refused(verifier: JwtVerifier, keys: Keys) -> None:
    raw = '{"alg": "none", "kid": "rsa-1", "alg": "RS256"}'
    rejected(verifier, make_token(keys.rsa, header=raw), "bad_header")


def test_duplicate_keys_in_payload_are_refused(verifier: JwtVerifier, keys: Keys) -> None:
    # Validly signed, but parsers disagree on which "sub" wins: one may log "user-1" while another authorizes "admin".
    raw = json.dumps(claims())[:-1] + ', "sub": "admin"}'
    rejected(verifier, make_token(keys.rsa, raw), "bad_payload")


def test_oversized_token_is_refused_before_any_decoding_or_crypto(
    verifier: JwtVerifier, keys: Keys, fetch: FakeFetch, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: Any) -> Any:
        raise AssertionError("decoded or verified an oversized token")

    monkeypatch.setattr(jwt_verify, "b64url_decode", must_not_run)
    monkeypatch.setattr(jwt_verify, "loads_strict", must_not_run)
    monkeypatch.setattr(jwt_verify, "verify_signature", must_not_run)
    tok = make_token(keys.rsa, claims(pad="x" * 8192))
    rejected(verifier, tok, "token_too_large")
    assert fetch.calls == []


def test_token_over_its_issuers_own_size_limit_is_refused(verifier: JwtVerifier, keys: Keys, fetch: FakeFetch) -> None:
    payload = {"iss": COGNITO, "sub": "s", "client_id": "client123", "exp": NOW + 60, "iat": NOW, "pad": "x" * 2000}
    tok = make_token(keys.cognito, payload, kid="cog-1")
    assert COGNITO_CFG.max_token_bytes < len(tok) <= CORP.max_token_bytes
    rejected(verifier, tok, "token_too_large")
    assert fetch.calls == []


def test_non_ascii_token_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    h, p, s = make_token(keys.rsa).split(".")
    rejected(verifier, f"{h}.{p}é.{s}", "malformed")


# --- header attacks ---


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "exp"])
def test_unknown_crit_header_is_refused(verifier: JwtVerifier, keys: Keys, crit: Any) -> None:
    rejected(verifier, make_token(keys.rsa, crit=crit), "crit_header")


def test_embedded_jwk_header_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    # CVE-2018-0114: the attacker signs with their own key and ships its public half in the header.
    attacker_jwk = jwk_of(keys.attacker.public_key(), "rsa-1")
    rejected(verifier, make_token(keys.attacker, jwk=attacker_jwk), "untrusted_key_header")


def test_jku_header_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.attacker, jku="https://evil.example/jwks.json"), "untrusted_key_header")


def test_x5u_header_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.attacker, x5u="https://evil.example/cert.pem"), "untrusted_key_header")


def test_x5c_header_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.attacker, x5c=["MIIBIjANBgkq"]), "untrusted_key_header")


def test_trusted_key_headers_are_refused_even_on_a_genuine_token(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, jku=JWKS_URL), "untrusted_key_header")


@pytest.mark.parametrize("member", [{"b64": False}, {"zip": "DEF"}, {"enc": "A256GCM"}, {"cty": "JWT"}])
def test_unsupported_header_members_are_refused(verifier: JwtVerifier, keys: Keys, member: dict[str, Any]) -> None:
    rejected(verifier, make_token(keys.rsa, **member), "unsupported_header")


@pytest.mark.parametrize(
    "kid", ["../../../../dev/null", "..\\..\\keys\\hmac", "rsa-1/../rsa-1", "rsa-1\x00", "rsa 1", "a" * 257, "", 7]
)
def test_kid_with_path_traversal_or_odd_characters_is_refused(verifier: JwtVerifier, keys: Keys, kid: Any) -> None:
    rejected(verifier, make_token(keys.rsa, kid=kid), "bad_kid")


def test_kid_naming_no_configured_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, kid="/etc/passwd"), "unknown_kid")


def test_absent_kid_when_jwks_has_several_keys_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, kid=DROP), "kid_required")


@pytest.mark.parametrize("typ", ["JWE", "JOSE", "secevent+jwt", "dpop+jwt", "", 1])
def test_typ_other_than_jwt_is_refused(verifier: JwtVerifier, keys: Keys, typ: Any) -> None:
    rejected(verifier, make_token(keys.rsa, typ=typ), "bad_typ")


# --- issuer attacks ---


def test_wrong_issuer_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, claims(iss="https://evil.example.com")), "unknown_issuer")


@pytest.mark.parametrize(
    "iss",
    [
        ISSUER + ".evil",
        ISSUER + "/",
        ISSUER + "/path",
        "https://issuer.example",
        "https://evil-issuer.example.com",
        "xhttps://issuer.example.com",
        " " + ISSUER,
        ISSUER.upper(),
        "http://issuer.example.com",
    ],
)
def test_partially_matching_issuer_is_refused(verifier: JwtVerifier, keys: Keys, iss: str) -> None:
    # Signed with the real issuer's real key: only the exact iss comparison stands in the way.
    rejected(verifier, make_token(keys.rsa, claims(iss=iss)), "unknown_issuer")


@pytest.mark.parametrize("iss", [[ISSUER], {"value": ISSUER}, None, DROP])
def test_issuer_that_is_not_a_string_is_refused(verifier: JwtVerifier, keys: Keys, iss: Any) -> None:
    rejected(verifier, make_token(keys.rsa, claims(iss=iss)), "unknown_issuer")


def test_token_claiming_issuer_b_signed_with_issuer_a_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    payload = {"iss": COGNITO, "sub": "s", "client_id": "client123", "exp": NOW + 60, "iat": NOW}
    # A's kid: not in B's key set.
    rejected(verifier, make_token(keys.rsa, payload, kid="rsa-1"), "unknown_kid")
    # B's kid, A's key: B's key does not verify it.
    rejected(verifier, make_token(keys.rsa, payload, kid="cog-1"), "bad_signature")


def test_token_claiming_issuer_a_signed_with_issuer_b_key_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.cognito, kid="cog-1"), "unknown_kid")


# --- claim attacks ---


def test_expired_token_beyond_leeway_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, claims(exp=NOW - 31)), "expired")
    rejected(verifier, make_token(keys.rsa, claims(exp=NOW - 30)), "expired")  # exp + leeway == now: not "before"


def test_expired_token_within_leeway_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, claims(exp=NOW - 29))).expires_at == NOW - 29


def test_nbf_in_future_beyond_leeway_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, claims(nbf=NOW + 31)), "not_yet_valid")


def test_nbf_in_future_within_leeway_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, claims(nbf=NOW + 30))).subject == "user-1"


def test_iat_in_future_beyond_leeway_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, claims(iat=NOW + 31)), "issued_in_future")


def test_iat_in_future_within_leeway_is_accepted(verifier: JwtVerifier, keys: Keys) -> None:
    assert verifier.verify(make_token(keys.rsa, claims(iat=NOW + 30))).subject == "user-1"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub"])
def test_missing_required_claim_is_refused(verifier: JwtVerifier, keys: Keys, claim: str) -> None:
    rejected(verifier, make_token(keys.rsa, claims(**{claim: DROP})), f"missing_claim_{claim}")
    rejected(verifier, make_token(keys.rsa, claims(**{claim: None})), f"missing_claim_{claim}")


def test_missing_exp_is_refused_even_when_not_configured_as_required(verifier: JwtVerifier, keys: Keys) -> None:
    assert SINGLE_CFG.required_claims == ()
    rejected(verifier, make_token(keys.rsa, claims(iss=SINGLE, exp=DROP), kid="only"), "missing_claim_exp")


def test_wrong_audience_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    rejected(verifier, make_token(keys.rsa, claims(aud="another-api")), "bad_audience")


@pytest.mark.parametrize("aud", ["bulwark-api-evil", "bulwark", "BULWARK-API", " bulwark-api"])
def test_partially_matching_audience_is_refused(verifier: JwtVerifier, keys: Keys, aud: str) -> None:
    rejected(verifier, make_token(keys.rsa, claims(aud=aud)), "bad_audience")


@pytest.mark.parametrize("aud", [["a", "b"], [], ["bulwark-api-x"]])
def test_audience_list_without_a_configured_audience_is_refused(verifier: JwtVerifier, keys: Keys, aud: Any) -> None:
    rejected(verifier, make_token(keys.rsa, claims(aud=aud)), "bad_audience")


@pytest.mark.parametrize("aud", [DROP, None, 1, {"aud": "bulwark-api"}, ["bulwark-api", 1]])
def test_missing_or_malformed_audience_is_refused(verifier: JwtVerifier, keys: Keys, aud: Any) -> None:
    rejected(verifier, make_token(keys.rsa, claims(aud=aud)), "bad_audience")


def test_id_token_audience_is_not_accepted_where_client_id_is_configured(verifier: JwtVerifier, keys: Keys) -> None:
    payload = {"iss": COGNITO, "sub": "s", "aud": "client123", "exp": NOW + 60, "iat": NOW}
    rejected(verifier, make_token(keys.cognito, payload, kid="cog-1"), "bad_audience")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": str(NOW + 300)}, "claim_type_exp"),
        ({"exp": True}, "claim_type_exp"),
        ({"exp": [NOW + 300]}, "claim_type_exp"),
        ({"nbf": "0"}, "claim_type_nbf"),
        ({"iat": "now"}, "claim_type_iat"),
        ({"sub": 42}, "claim_type_sub"),
        ({"sub": ""}, "claim_type_sub"),
        ({"jti": 7}, "claim_type_jti"),
        ({"org": ["acme"]}, "claim_type_tenant"),
        ({"scope": 1}, "claim_type_roles"),
        ({"scope": {"models:read": True}}, "claim_type_roles"),
        ({"scope": ["models:read", 1]}, "claim_type_roles"),
    ],
)
def test_claims_of_the_wrong_type_are_refused(
    verifier: JwtVerifier, keys: Keys, changes: dict[str, Any], reason: str
) -> None:
    rejected(verifier, make_token(keys.rsa, claims(**changes)), reason)


def test_number_overflowing_to_infinity_is_refused(verifier: JwtVerifier, keys: Keys) -> None:
    raw = json.dumps(claims(exp=0))[:-1].replace('"exp": 0', '"exp": 1e999') + "}"
    assert "1e999" in raw
    rejected(verifier, make_token(keys.rsa, raw), "bad_payload")


# --- one answer ---


def test_every_refusal_gives_the_same_answer(verifier: JwtVerifier, keys: Keys) -> None:
    bodies = []
    for tok in [
        make_token(keys.rsa, claims(exp=NOW - 100)),
        make_token(keys.attacker),
        make_token(keys.rsa, claims(iss="https://evil.example.com")),
        "a.b.c",
    ]:
        with pytest.raises(AuthenticationError) as info:
            verifier.verify(tok)
        assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
        bodies.append(info.value.to_body())
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["error"]["code"] == "invalid_credentials"


def test_jwks_unreachable_without_cached_keys_is_503_not_401(keys: Keys) -> None:
    def down(url: str, timeout: float) -> bytes:
        raise OSError("connection refused")

    v = JwtVerifier([CORP], JwksCache(fetch=down, clock=lambda: 0.0), clock=lambda: NOW)
    with pytest.raises(ServiceUnavailable) as info:
        v.verify(make_token(keys.rsa))
    assert (info.value.status, info.value.code) == (503, "jwks_unavailable")
    assert int(info.value.headers["Retry-After"]) >= 1


def test_two_issuers_with_the_same_iss_are_a_configuration_error() -> None:
    twin = CORP.model_copy(update={"name": "corp2"})
    with pytest.raises(ValueError, match="configured twice"):
        JwtVerifier([CORP, twin], JwksCache(fetch=FakeFetch({})))
