"""Signing keys of the configured OAuth 2.0 / OIDC issuers, fetched from their JWKS URLs and cached per container.

Only the JWKS URL in the policy is trusted: keys named inside a token (`jku`, `x5u`, `jwk`, `x5c`) never reach here.

Cache rules, per issuer (keyed by issuer name and JWKS URL):
- A successful fetch is used for `jwks_cache_seconds`.
- A fetch (successful or not) is attempted at most once per `jwks_min_refresh_seconds` (or `jwks_cache_seconds` if
  shorter), whatever the traffic: an unknown `kid` triggers at most one refresh per interval, and a per-issuer lock
  makes concurrent requests wait for that one fetch instead of starting their own.
- If the endpoint is down, cached keys keep working until they expire. After that, and before the first successful
  fetch, tokens of that issuer get 503 `jwks_unavailable` with Retry-After (see "Why 503" below).

Which keys are usable: `kty` RSA (modulus of at least 2048 bits) or EC (P-256, P-384, P-521); `use`, if present,
must be `sig`; `key_ops`, if present, must contain `verify`; a JWK `alg`, if present, must equal the token's `alg`.
Symmetric (`oct`) keys, unknown key types and entries carrying private members are ignored. The key type must
match the algorithm family: RSA for RS*/PS*, EC on the matching curve for ES256/ES384/ES512. HS* is never accepted.

Why 503 when no usable keys can be had: the failure is ours (or the issuer's), not the caller's. A 401 would tell a
client with a valid token to sign in again, and would feed the per-IP failed-attempt counter, locking out every JWT
caller during an identity-provider outage. A 503 is still a refusal (fail closed), carries Retry-After, and never
happens while the cache holds keys: an unknown `kid` next to a fresh key set is a 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from bulwark.errors import AuthenticationError, JwksUnavailable
from bulwark.policy import IssuerConfig

logger = logging.getLogger(__name__)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Fetch = Callable[[str, float], bytes]

DEFAULT_TIMEOUT_SECONDS = 2.0
DEFAULT_MAX_BYTES = 256 * 1024
MIN_RSA_BITS = 2048

# Algorithm → family; anything not listed (HS*, none, EdDSA, …) is refused before a key is looked up.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
SUPPORTED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_CURVES)

_JWK_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = ("kty", "n", "e", "crv", "x", "y")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class TokenRejectedError(AuthenticationError):
    """401 `invalid_credentials`, the same answer for every cause. `reason` is a fixed code for logs and tests only:
    it never reaches the client, so it cannot become an oracle."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def b64url_decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 §2): URL alphabet only, no padding, canonical trailing bits. Raises ValueError."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    # Re-encoding must give the same text: otherwise two spellings of one token would both verify.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("non-canonical base64url")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("duplicate key")
        obj[k] = v
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 would silently become infinity, e.g. an exp that never comes
        raise ValueError("number out of range")
    return value


def loads_strict(raw: bytes) -> Any:
    """JSON that parsers cannot disagree on: UTF-8, no duplicate keys, no NaN/Infinity. Raises ValueError."""
    text = raw.decode("utf-8")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float)


def check_jwks_url(url: str) -> None:
    """HTTPS only; plain HTTP only to this machine (tests, `bulwark local`). Raises ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return
    raise ValueError("the JWKS URL must use https (http only for 127.0.0.1 or localhost)")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could leave https or the configured host; the JWKS URL in the policy is the only one trusted.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def urllib_fetch(url: str, timeout: float, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """GET the JWKS: https (or loopback http), no redirects, 200 only, body capped, whole read bounded by timeout."""
    check_jwks_url(url)
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "bulwark-jwks"})  # noqa: S310 - scheme checked above
    with _OPENER.open(request, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"JWKS answered HTTP {response.status}")
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise OSError("JWKS response too large")
        body = bytearray()
        # read1: whatever has arrived (one socket read), so a server dripping bytes cannot outlast the deadline.
        while chunk := response.read1(16384):
            body += chunk
            if len(body) > max_bytes:
                raise OSError("JWKS response too large")
            if time.monotonic() > deadline:
                raise TimeoutError("JWKS response too slow")
        return bytes(body)


@dataclass(frozen=True)
class Jwk:
    """One usable verification key from a JWKS, with PyJWT's key bound to each algorithm it may verify."""

    kid: str | None
    alg: str | None
    key: PublicKey
    # PyJWT binds a PyJWK to one algorithm and verifies with that one only (never the token's say-so): one per alg.
    by_alg: Mapping[str, PyJWK] = field(default_factory=dict)


def _b64_member(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"missing {name}")
    # Padding is tolerated here (the JWKS is trusted input), never in tokens.
    return b64url_decode(value.rstrip("="))


def parse_jwk(jwk: Any) -> Jwk | None:
    """The verification key of one JWKS entry, or None if the entry must not be used for signatures."""
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        return None
    kid, alg, use, ops = jwk.get("kid"), jwk.get("alg"), jwk.get("use"), jwk.get("key_ops")
    if (kid is not None and not isinstance(kid, str)) or (alg is not None and not isinstance(alg, str)):
        return None
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    try:
        key: PublicKey
        if jwk.get("kty") == "RSA":
            n = int.from_bytes(_b64_member(jwk, "n"), "big")
            e = int.from_bytes(_b64_member(jwk, "e"), "big")
            if n.bit_length() < MIN_RSA_BITS or e < 3 or e % 2 == 0:
                return None
            key = rsa.RSAPublicNumbers(e, n).public_key()
        elif jwk.get("kty") == "EC":
            crv = jwk.get("crv")
            if not isinstance(crv, str) or crv not in _JWK_CURVES:
                return None
            curve, size = _JWK_CURVES[crv]
            x, y = _b64_member(jwk, "x"), _b64_member(jwk, "y")
            if len(x) != size or len(y) != size:
                return None
            # public_key() checks that the point is on the curve (invalid-curve attacks).
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve()
            ).public_key()
        else:
            return None  # oct (symmetric), OKP and anything unknown
    except ValueError:
        return None
    found = Jwk(kid=kid, alg=alg, key=key)
    # Only the public members reach PyJWT (private ones were refused above), without the padding tolerated here.
    public = {m: jwk[m].rstrip("=") if m in ("n", "e", "x", "y") else jwk[m] for m in _PUBLIC_MEMBERS if m in jwk}
    try:
        by_alg = {a: PyJWK(public, algorithm=a) for a in sorted(SUPPORTED_ALGORITHMS) if key_matches(found, a)}
    except PyJWTError:  # InvalidKeyError, PyJWKError: a key PyJWT cannot build is not used
        return None
    return replace(found, by_alg=by_alg)


def parse_jwks(body: bytes) -> tuple[Jwk, ...]:
    """Usable keys of a JWKS document. Raises ValueError if the document itself is not a JWKS."""
    doc = loads_strict(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document")
    return tuple(k for k in (parse_jwk(entry) for entry in doc["keys"]) if k is not None)


def key_matches(jwk: Jwk, alg: str) -> bool:
    """Whether the key may verify a signature made with `alg` (key type, curve, size and the JWK's own alg)."""
    if jwk.alg is not None and jwk.alg != alg:
        return False
    if alg in RSA_ALGORITHMS:
        return isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size >= MIN_RSA_BITS
    curve = EC_CURVES.get(alg)
    return curve is not None and isinstance(jwk.key, ec.EllipticCurvePublicKey) and isinstance(jwk.key.curve, curve)


@dataclass
class _IssuerKeys:
    keys: tuple[Jwk, ...] = ()
    fetched_at: float | None = None  # last successful fetch
    attempted_at: float | None = None  # last fetch attempt, successful or not
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """Verification keys per issuer, fetched from the configured JWKS URL only. One instance per container."""

    def __init__(
        self,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._fetch: Fetch = fetch or (lambda url, timeout: urllib_fetch(url, timeout, max_bytes=max_bytes))
        self._clock = clock
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._states: dict[tuple[str, str], _IssuerKeys] = {}
        self._states_lock = threading.Lock()
        self.fetch_count = 0  # attempts, for metrics and tests

    def _state(self, issuer: IssuerConfig) -> _IssuerKeys:
        ident = (issuer.name, issuer.jwks_url)
        with self._states_lock:
            return self._states.setdefault(ident, _IssuerKeys())

    def key_for(self, issuer: IssuerConfig, kid: str | None, alg: str) -> PublicKey:
        """The key that may verify a token of `issuer` with header `kid` and `alg`.

        Raises TokenRejectedError (401) when no such key exists, and ServiceUnavailable (503 `jwks_unavailable`)
        when the issuer's keys cannot be had at all."""
        return self._lookup(issuer, kid, alg).key

    def jwk_for(self, issuer: IssuerConfig, kid: str | None, alg: str) -> PyJWK:
        """As `key_for`, as PyJWT's key bound to `alg` (what `jwt.decode` verifies with)."""
        return self._lookup(issuer, kid, alg).by_alg[alg]

    def _lookup(self, issuer: IssuerConfig, kid: str | None, alg: str) -> Jwk:
        if alg not in SUPPORTED_ALGORITHMS or alg not in issuer.algorithms:
            raise TokenRejectedError("alg_not_allowed")
        state = self._state(issuer)
        with state.lock:
            now = self._clock()
            if state.fetched_at is not None and now - state.fetched_at < issuer.jwks_cache_seconds:
                found = _select(state.keys, kid, alg)
                if found is not None:
                    return found
                # Unknown kid: perhaps a key rotation. At most one refresh per interval; a failed one keeps the keys.
                if self._may_attempt(state, issuer, now):
                    self._refresh(state, issuer, now)
                    found = _select(state.keys, kid, alg)
                    if found is not None:
                        return found
                raise TokenRejectedError("unknown_kid")
            # Nothing usable cached (never fetched, or expired): fetch if allowed, else refuse with 503.
            if self._may_attempt(state, issuer, now) and self._refresh(state, issuer, now):
                found = _select(state.keys, kid, alg)
                if found is not None:
                    return found
                raise TokenRejectedError("unknown_kid")
            raise JwksUnavailable(retry_after=self._retry_after(state, issuer, now))

    def _interval(self, issuer: IssuerConfig) -> float:
        return float(min(issuer.jwks_min_refresh_seconds, issuer.jwks_cache_seconds))

    def _may_attempt(self, state: _IssuerKeys, issuer: IssuerConfig, now: float) -> bool:
        return state.attempted_at is None or now - state.attempted_at >= self._interval(issuer)

    def _retry_after(self, state: _IssuerKeys, issuer: IssuerConfig, now: float) -> int:
        if state.attempted_at is None:
            return 1
        return max(1, math.ceil(state.attempted_at + self._interval(issuer) - now))

    def _refresh(self, state: _IssuerKeys, issuer: IssuerConfig, now: float) -> bool:
        """One fetch; called with the issuer's lock held. On any failure the previous keys stay as they were."""
        state.attempted_at = now
        self.fetch_count += 1
        try:
            check_jwks_url(issuer.jwks_url)
            body = self._fetch(issuer.jwks_url, self._timeout)
            if len(body) > self._max_bytes:
                raise ValueError("JWKS response too large")
            keys = parse_jwks(body)
        except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
            logger.warning(
                "JWKS fetch failed", extra={"issuer": issuer.name, "error": type(exc).__name__, "detail": str(exc)}
            )
            return False
        state.keys = keys
        # Timestamped at the start of the fetch, so a slow fetch never extends the cache lifetime.
        state.fetched_at = now
        if not keys:
            logger.warning("JWKS has no usable signing keys", extra={"issuer": issuer.name})
        return True


def _select(keys: tuple[Jwk, ...], kid: str | None, alg: str) -> Jwk | None:
    """The key for `kid`, None if the kid is unknown. Raises TokenRejectedError when the kid is known but unusable for
    `alg` (key confusion) or when the token names no kid and the set does not have exactly one key."""
    if kid is None:
        if len(keys) != 1:
            raise TokenRejectedError("kid_required")
        candidates = list(keys)
    else:
        candidates = [k for k in keys if k.kid == kid]
        if not candidates:
            return None
    usable = [k for k in candidates if key_matches(k, alg)]
    if len(usable) != 1:
        # None: the key type, curve or JWK alg does not fit the token's alg. Several: an ambiguous JWKS.
        raise TokenRejectedError("key_alg_mismatch" if not usable else "ambiguous_kid")
    return usable[0]
