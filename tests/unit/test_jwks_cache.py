"""JwksCache with an in-memory JWKS endpoint and a hand-driven clock: caching, refresh limits, outages, key filtering.

The same behaviour against a real HTTP server is in tests/integration/test_jwks_http.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bulwark.auth.jwks import JwksCache, TokenRejectedError, b64url_decode, check_jwks_url, loads_strict, parse_jwk
from bulwark.errors import ServiceUnavailable
from bulwark.policy import IssuerConfig

URL = "https://issuer.example.com/jwks.json"
ISSUER = IssuerConfig(
    name="corp",
    issuer="https://issuer.example.com",
    audience=("api",),
    jwks_url=URL,
    algorithms=("RS256", "ES256"),
    jwks_cache_seconds=600,
    jwks_min_refresh_seconds=60,
)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    n = key.public_key().public_numbers().n
    return {"kty": "RSA", "kid": kid, "n": b64u(n.to_bytes((n.bit_length() + 7) // 8, "big")), "e": "AQAB", **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": b64u(nums.x.to_bytes(32, "big")),
        "y": b64u(nums.y.to_bytes(32, "big")),
        **extra,
    }


@pytest.fixture(scope="module")
def rsa_a() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_b() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_a() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A JWKS endpoint in memory: serves `doc`, or fails while `down` is set; counts fetches."""

    def __init__(self, doc: dict[str, Any] | bytes) -> None:
        self.doc = doc
        self.down = False
        self.calls = 0
        self.delay = 0.0

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise OSError("connection refused")
        return self.doc if isinstance(self.doc, bytes) else json.dumps(self.doc).encode()


def reason_of(cache: JwksCache, kid: str | None, alg: str = "RS256", issuer: IssuerConfig = ISSUER) -> str:
    with pytest.raises(TokenRejectedError) as info:
        cache.key_for(issuer, kid, alg)
    return info.value.reason


def test_keys_are_fetched_once_and_cached(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    first = cache.key_for(ISSUER, "k1", "RS256")
    clock.now += 599
    assert cache.key_for(ISSUER, "k1", "RS256") is first
    assert endpoint.calls == 1


def test_cache_expires_after_jwks_cache_seconds(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    cache.key_for(ISSUER, "k1", "RS256")
    clock.now += 600
    cache.key_for(ISSUER, "k1", "RS256")
    assert endpoint.calls == 2


def test_unknown_kid_refreshes_at_most_once_per_interval(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    cache.key_for(ISSUER, "k1", "RS256")
    clock.now += 60
    for i in range(50):  # an attacker cycling through made-up kids
        assert reason_of(cache, f"made-up-{i}") == "unknown_kid"
    assert endpoint.calls == 2  # the first fetch and one refresh
    clock.now += 59
    assert reason_of(cache, "made-up-x") == "unknown_kid"
    assert endpoint.calls == 2
    clock.now += 1
    assert reason_of(cache, "made-up-y") == "unknown_kid"
    assert endpoint.calls == 3


def test_unknown_kid_right_after_a_fetch_does_not_refetch(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    assert reason_of(cache, "nope") == "unknown_kid"
    assert endpoint.calls == 1


def test_rotated_key_is_found_by_the_unknown_kid_refresh(rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    cache.key_for(ISSUER, "k1", "RS256")
    endpoint.doc = {"keys": [rsa_jwk(rsa_a, "k1"), rsa_jwk(rsa_b, "k2")]}
    clock.now += 60
    assert cache.key_for(ISSUER, "k2", "RS256").public_numbers() == rsa_b.public_key().public_numbers()


def test_endpoint_down_cached_keys_work_until_expiry_then_503(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    cache.key_for(ISSUER, "k1", "RS256")
    endpoint.down = True
    clock.now += 120
    assert reason_of(cache, "k-new") == "unknown_kid"  # refresh failed, the fresh key set still answers
    assert cache.key_for(ISSUER, "k1", "RS256") is not None
    clock.now += 479
    assert cache.key_for(ISSUER, "k1", "RS256") is not None
    clock.now += 1  # 600 s after the last successful fetch
    with pytest.raises(ServiceUnavailable) as info:
        cache.key_for(ISSUER, "k1", "RS256")
    assert info.value.code == "jwks_unavailable"
    assert info.value.headers["Retry-After"] == "60"
    calls = endpoint.calls
    for _ in range(20):  # no fetch per request while down
        with pytest.raises(ServiceUnavailable):
            cache.key_for(ISSUER, "k1", "RS256")
    assert endpoint.calls == calls
    clock.now += 45
    with pytest.raises(ServiceUnavailable) as info:
        cache.key_for(ISSUER, "k1", "RS256")
    assert info.value.headers["Retry-After"] == "15"
    endpoint.down = False
    clock.now += 15
    assert cache.key_for(ISSUER, "k1", "RS256") is not None  # recovered on the next allowed attempt
    assert endpoint.calls == calls + 1


def test_endpoint_down_at_cold_start_is_503(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]})
    endpoint.down = True
    cache = JwksCache(fetch=endpoint, clock=Clock())
    with pytest.raises(ServiceUnavailable) as info:
        cache.key_for(ISSUER, "k1", "RS256")
    assert (info.value.status, info.value.code) == (503, "jwks_unavailable")


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b'{"keys": {}}',
        b"[]",
        b'{"keys": [], "keys": []}',
        b"\xff",
        b'{"keys": [' + b"1," * 99 + b"1",
    ],
)
def test_a_broken_jwks_document_keeps_the_previous_keys(rsa_a: rsa.RSAPrivateKey, body: bytes) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    cache = JwksCache(fetch=endpoint, clock=clock)
    cache.key_for(ISSUER, "k1", "RS256")
    endpoint.doc = body
    clock.now += 60
    assert reason_of(cache, "k2") == "unknown_kid"
    assert cache.key_for(ISSUER, "k1", "RS256") is not None
    assert endpoint.calls == 2


def test_oversized_jwks_response_is_a_failed_fetch(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")], "pad": "x" * 300_000})
    cache = JwksCache(fetch=endpoint, clock=Clock(), max_bytes=256 * 1024)
    with pytest.raises(ServiceUnavailable):
        cache.key_for(ISSUER, "k1", "RS256")


def test_concurrent_requests_share_one_fetch(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint, clock = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), Clock()
    endpoint.delay = 0.05
    cache = JwksCache(fetch=endpoint, clock=clock)
    errors: list[str] = []
    start = threading.Barrier(16)

    def call(kid: str) -> None:
        start.wait()
        try:
            cache.key_for(ISSUER, kid, "RS256")
        except TokenRejectedError as exc:
            errors.append(exc.reason)
        except Exception as exc:  # e.g. a 503 because another thread's fetch was not waited for
            errors.append(type(exc).__name__)

    def burst(kid: str) -> None:
        threads = [threading.Thread(target=call, args=(kid,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)

    burst("k1")  # cold cache
    assert (endpoint.calls, errors) == (1, [])
    clock.now += 60
    burst("unknown")
    assert endpoint.calls == 2
    assert errors == ["unknown_kid"] * 16


def test_issuers_have_separate_key_sets(rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey) -> None:
    other = ISSUER.model_copy(update={"name": "other", "issuer": "https://other.example", "jwks_url": URL + "?b"})
    docs = {URL: {"keys": [rsa_jwk(rsa_a, "a1")]}, URL + "?b": {"keys": [rsa_jwk(rsa_b, "b1")]}}
    calls: list[str] = []

    def fetch(url: str, timeout: float) -> bytes:
        calls.append(url)
        return json.dumps(docs[url]).encode()

    cache = JwksCache(fetch=fetch, clock=Clock())
    assert cache.key_for(ISSUER, "a1", "RS256") is not None
    assert cache.key_for(other, "b1", "RS256") is not None
    assert reason_of(cache, "b1", issuer=ISSUER) == "unknown_kid"
    assert reason_of(cache, "a1", issuer=other) == "unknown_kid"
    assert sorted(calls) == [URL, URL + "?b"]


def test_http_jwks_url_off_loopback_is_never_fetched(rsa_a: rsa.RSAPrivateKey) -> None:
    endpoint = Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]})
    plain = ISSUER.model_copy(update={"jwks_url": "http://issuer.example.com/jwks.json"})
    with pytest.raises(ServiceUnavailable):
        JwksCache(fetch=endpoint, clock=Clock()).key_for(plain, "k1", "RS256")
    assert endpoint.calls == 0


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none", "EdDSA", "RS1"])
def test_symmetric_and_unsupported_algorithms_are_never_accepted(rsa_a: rsa.RSAPrivateKey, alg: str) -> None:
    endpoint = Endpoint({"keys": [rsa_jwk(rsa_a, "k1"), {"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]})
    cache = JwksCache(fetch=endpoint, clock=Clock())
    assert reason_of(cache, "k1", alg=alg) == "alg_not_allowed"
    assert endpoint.calls == 0


def test_algorithm_not_in_the_issuers_list_is_refused(rsa_a: rsa.RSAPrivateKey) -> None:
    cache = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), clock=Clock())
    assert reason_of(cache, "k1", alg="PS256") == "alg_not_allowed"


@pytest.mark.parametrize(
    "entry",
    [
        {"kty": "oct", "kid": "x", "k": "c2VjcmV0"},
        {"kty": "OKP", "kid": "x", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"},
        "not an object",
    ],
)
def test_unusable_key_types_are_ignored(rsa_a: rsa.RSAPrivateKey, entry: Any) -> None:
    cache = JwksCache(fetch=Endpoint({"keys": [entry, rsa_jwk(rsa_a, "k1")]}), clock=Clock())
    assert reason_of(cache, "x") == "unknown_kid"
    assert cache.key_for(ISSUER, "k1", "RS256") is not None  # the good key next to it still works


@pytest.mark.parametrize(
    "extra", [{"use": "enc"}, {"key_ops": ["encrypt"]}, {"key_ops": "verify"}, {"d": "AQAB"}, {"p": "AQAB"}]
)
def test_keys_not_meant_for_signatures_are_ignored(rsa_a: rsa.RSAPrivateKey, extra: dict[str, Any]) -> None:
    cache = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(rsa_a, "k1", **extra)]}), clock=Clock())
    assert reason_of(cache, "k1") == "unknown_kid"


def test_weak_rsa_key_is_ignored() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cache = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(weak, "k1")]}), clock=Clock())
    assert reason_of(cache, "k1") == "unknown_kid"


def test_ec_point_not_on_the_curve_is_ignored(ec_a: ec.EllipticCurvePrivateKey) -> None:
    bad = ec_jwk(ec_a, "e1")
    bad["y"] = b64u((int.from_bytes(base64.urlsafe_b64decode(bad["y"] + "=="), "big") ^ 1).to_bytes(32, "big"))
    cache = JwksCache(fetch=Endpoint({"keys": [bad]}), clock=Clock())
    assert reason_of(cache, "e1", alg="ES256") == "unknown_kid"


def test_ec_key_with_wrong_coordinate_length_is_ignored(ec_a: ec.EllipticCurvePrivateKey) -> None:
    short = ec_jwk(ec_a, "e1")
    short["crv"] = "P-384"
    assert parse_jwk(short) is None


def test_same_kid_for_rsa_and_ec_is_resolved_by_algorithm(
    rsa_a: rsa.RSAPrivateKey, ec_a: ec.EllipticCurvePrivateKey
) -> None:
    cache = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(rsa_a, "k"), ec_jwk(ec_a, "k")]}), clock=Clock())
    assert isinstance(cache.key_for(ISSUER, "k", "RS256"), rsa.RSAPublicKey)
    assert isinstance(cache.key_for(ISSUER, "k", "ES256"), ec.EllipticCurvePublicKey)


def test_two_keys_of_one_type_under_one_kid_are_refused(rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey) -> None:
    cache = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(rsa_a, "k"), rsa_jwk(rsa_b, "k")]}), clock=Clock())
    assert reason_of(cache, "k") == "ambiguous_kid"


def test_absent_kid_uses_the_only_key_and_refuses_when_there_are_several(
    rsa_a: rsa.RSAPrivateKey, rsa_b: rsa.RSAPrivateKey
) -> None:
    one = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(rsa_a, "k1")]}), clock=Clock())
    assert one.key_for(ISSUER, None, "RS256") is not None
    two = JwksCache(fetch=Endpoint({"keys": [rsa_jwk(rsa_a, "k1"), rsa_jwk(rsa_b, "k2")]}), clock=Clock())
    assert reason_of(two, None) == "kid_required"


def test_jwk_padding_is_tolerated_in_the_jwks(rsa_a: rsa.RSAPrivateKey) -> None:
    jwk = rsa_jwk(rsa_a, "k1")
    jwk["e"] = "AQAB"
    jwk["n"] += "=" * (-len(jwk["n"]) % 4)
    assert parse_jwk(jwk) is not None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://issuer.example.com/jwks", True),
        ("http://127.0.0.1:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://[::1]:9/jwks", True),
        ("http://issuer.example.com/jwks", False),
        ("http://127.0.0.1.evil.example/jwks", False),
        ("file:///etc/passwd", False),
        ("ftp://issuer.example.com/jwks", False),
        ("https:///jwks", False),
    ],
)
def test_jwks_url_must_be_https_or_loopback(url: str, ok: bool) -> None:
    if ok:
        check_jwks_url(url)
    else:
        with pytest.raises(ValueError, match="https"):
            check_jwks_url(url)


@pytest.mark.parametrize("text", ["YQ==", "YR", "Y", "a+b/", "a b", "YWJj\n"])
def test_b64url_decode_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_b64url_decode_round_trips() -> None:
    assert b64url_decode("") == b""
    assert b64url_decode("YQ") == b"a"
    assert b64url_decode("_-8") == b"\xff\xef"


@pytest.mark.parametrize("raw", [b'{"a": 1, "a": 2}', b"NaN", b"[Infinity]", b"1e400", b"\xff"])
def test_loads_strict_refuses_ambiguous_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        loads_strict(raw)
