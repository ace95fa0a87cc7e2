"""Verification of OAuth 2.0 / OIDC access tokens (JWS compact serialization) from the issuers in the policy.

Order of checks, each failure a `TokenRejectedError` (401 `invalid_credentials`, one answer for every cause):
1. size (`max_token_bytes`, the largest over all issuers) and ASCII, before any decoding or crypto;
2. shape: exactly three non-empty segments of strict base64url (URL alphabet, no padding, canonical);
3. header: a JSON object without duplicate keys; `alg` a supported asymmetric algorithm (never `none` or HS*);
   no `jku`/`x5u`/`jwk`/`x5c` (only the configured JWKS is trusted); no `crit` (no extension is understood);
   no `b64`/`zip`/`enc`/`cty`; `typ`, if present, JWT or at+jwt; `kid`, if present, a plain identifier;
4. payload: a JSON object without duplicate keys; `iss` matched exactly (no prefix, suffix or case folding) against
   the configured issuers, which selects the only keys and rules used from then on; `alg` in that issuer's list;
5. signature, by PyJWT (`jwt.decode` with the issuer's `PyJWK` for `kid`, bound to `alg`, and the algorithms pinned
   to the issuer's list; the key type must fit `alg`: no RSA/EC/HMAC confusion);
6. claims, by Bulwark (PyJWT's date checks run `int()`, so a date given as the string "1700000000" or as `true`
   would pass): `exp` and `sub` always required, plus the issuer's `required_claims`; numeric dates are numbers (not
   strings or booleans); `exp`, `nbf` and `iat` checked with the issuer's leeway; the audience claim (`aud`, or
   `audience_claim`) is a string or a list containing at least one configured audience.

Roles: the issuer's `roles_claim` holds a space-separated string (OAuth `scope`) or a list of strings (e.g.
`cognito:groups`); each value is mapped through `role_map`, unmapped values are dropped, and `default_role` is used
when nothing maps. An empty `roles` tuple is possible: the caller decides (the authorizer answers 403).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from jwt import PyJWK

from bulwark.auth.jwks import SUPPORTED_ALGORITHMS, JwksCache, TokenRejectedError, b64url_decode, loads_strict
from bulwark.policy import IssuerConfig

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = ["JwtVerifier", "TokenRejectedError", "VerifiedToken"]

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# Printable identifier characters (base64, base64url, hex, UUIDs, Cognito's "+/=" kids); never "..", "\" or controls.
_KID = re.compile(r"[A-Za-z0-9._~+/=:-]{1,256}")
_UNTRUSTED_KEY_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c"})
_UNSUPPORTED_HEADERS = frozenset({"b64", "zip", "enc", "cty"})
_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
# PyJWT checks the signature and the algorithm pin only; the claims are checked after it by `_claims` (stricter types).
_SIGNATURE_ONLY: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str  # the issuer's config name, not the `iss` URL
    subject: str
    roles: tuple[str, ...]  # Bulwark roles after role_map (or default_role)
    claims_roles: tuple[str, ...]  # the raw values of roles_claim
    tenant: str | None
    expires_at: int
    token_id: str | None


def _b64(segment: str, reason: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError:
        raise TokenRejectedError(reason) from None


def _json_object(raw: bytes, reason: str) -> dict[str, Any]:
    try:
        obj = loads_strict(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TokenRejectedError(reason) from None
    if not isinstance(obj, dict):
        raise TokenRejectedError(reason)
    return obj


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejectedError(f"claim_type_{name}")
    return float(value)


def verify_signature(token: str, key: PyJWK, algorithms: Sequence[str]) -> None:
    """PyJWT verifies `token` with `key` (bound to one algorithm) within the issuer's `algorithms`.

    Raises TokenRejectedError on any PyJWT refusal (fail closed); the reasons name the two a pre-checked token can meet.
    """
    try:
        jwt.decode(token, key=key, algorithms=list(algorithms), options=_SIGNATURE_ONLY)
    except jwt.InvalidSignatureError:
        raise TokenRejectedError("bad_signature") from None
    except jwt.InvalidAlgorithmError:
        raise TokenRejectedError("alg_not_allowed") from None
    except jwt.PyJWTError:
        raise TokenRejectedError("rejected_by_pyjwt") from None


def _check_header(header: dict[str, Any]) -> tuple[str, str | None]:
    """The header's `alg` and `kid`, once the header passes step 3's rules."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        # Covers "none" in any spelling, HS*, EdDSA and any non-string alg.
        raise TokenRejectedError("alg_not_allowed")
    if _UNTRUSTED_KEY_HEADERS & header.keys():
        raise TokenRejectedError("untrusted_key_header")
    if "crit" in header:
        raise TokenRejectedError("crit_header")
    if _UNSUPPORTED_HEADERS & header.keys():
        raise TokenRejectedError("unsupported_header")
    typ = header.get("typ")
    if "typ" in header and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise TokenRejectedError("bad_typ")
    kid = header.get("kid")
    if "kid" in header and (not isinstance(kid, str) or not _KID.fullmatch(kid) or ".." in kid):
        raise TokenRejectedError("bad_kid")
    return alg, kid


class JwtVerifier:
    """Verifies Bearer JWTs against the issuers of the policy. Cheap to build; keys live in the shared JwksCache."""

    def __init__(
        self, issuers: Sequence[IssuerConfig], jwks: JwksCache, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._issuers: dict[str, IssuerConfig] = {}
        for cfg in issuers:
            if cfg.issuer in self._issuers:
                raise ValueError(f"issuer '{cfg.name}': the iss value is configured twice")
            self._issuers[cfg.issuer] = cfg
        self._jwks = jwks
        self._clock = clock
        self._max_bytes = max((cfg.max_token_bytes for cfg in issuers), default=0)

    def looks_like_jwt(self, credential: str) -> bool:
        """Shape only (three base64url segments): routes a Bearer credential to JWT verification, proves nothing."""
        parts = credential.split(".")
        return len(parts) == 3 and all(_SEGMENT.fullmatch(p) for p in parts)

    def verify(self, token: str) -> VerifiedToken:
        """The verified identity in `token`. Raises TokenRejectedError (401) on any failure, ServiceUnavailable (503
        `jwks_unavailable`) when the issuer's keys cannot be fetched and none are cached."""
        # 1. Size first: nothing is decoded or verified for a token no issuer would accept.
        if not isinstance(token, str) or len(token) > self._max_bytes:
            raise TokenRejectedError("token_too_large")
        if not token.isascii():
            raise TokenRejectedError("malformed")

        # 2. Shape.
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise TokenRejectedError("malformed")
        header_b64, payload_b64, signature_b64 = parts

        # 3. Header.
        alg, kid = _check_header(_json_object(_b64(header_b64, "bad_base64_header"), "bad_header"))

        # 4. Payload and issuer: exact match of the unverified iss selects the keys; nothing else is trusted yet.
        claims = _json_object(_b64(payload_b64, "bad_base64_payload"), "bad_payload")
        iss = claims.get("iss")
        cfg = self._issuers.get(iss) if isinstance(iss, str) else None
        if cfg is None:
            raise TokenRejectedError("unknown_issuer")
        if len(token) > cfg.max_token_bytes:
            raise TokenRejectedError("token_too_large")
        if alg not in cfg.algorithms:
            raise TokenRejectedError("alg_not_allowed")

        # 5. Signature with this issuer's key only, by PyJWT, with the algorithms pinned to this issuer's.
        _b64(signature_b64, "bad_base64_signature")  # strict and canonical: PyJWT's decoder is lenient
        key = self._jwks.jwk_for(cfg, kid, alg)
        verify_signature(token, key, cfg.algorithms)

        # 6. Claims.
        return self._claims(cfg, claims)

    def _claims(self, cfg: IssuerConfig, claims: dict[str, Any]) -> VerifiedToken:
        for name in ("exp", "sub", *cfg.required_claims):
            if name not in claims or claims[name] is None:
                raise TokenRejectedError(f"missing_claim_{name}")
        exp = _check_dates(claims, self._clock(), cfg.leeway_seconds)
        _check_audience(cfg, claims)

        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRejectedError("claim_type_sub")
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise TokenRejectedError("claim_type_jti")
        tenant = claims.get(cfg.tenant_claim) if cfg.tenant_claim else None
        if tenant is not None and not isinstance(tenant, str):
            raise TokenRejectedError("claim_type_tenant")

        claims_roles, roles = _roles(cfg, claims)
        return VerifiedToken(
            issuer=cfg.name,
            subject=subject,
            roles=roles,
            claims_roles=claims_roles,
            tenant=tenant,
            expires_at=int(exp),
            token_id=jti,
        )


def _check_dates(claims: dict[str, Any], now: float, leeway: float) -> float:
    """`exp` (returned), `nbf` and `iat` against the clock, with the issuer's leeway."""
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is None or now >= exp + leeway:
        raise TokenRejectedError("expired")
    if nbf is not None and nbf > now + leeway:
        raise TokenRejectedError("not_yet_valid")
    if iat is not None and iat > now + leeway:
        raise TokenRejectedError("issued_in_future")
    return exp


def _check_audience(cfg: IssuerConfig, claims: dict[str, Any]) -> None:
    aud = claims.get(cfg.audience_claim)
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenRejectedError("bad_audience")
    if not set(audiences) & set(cfg.audience):
        raise TokenRejectedError("bad_audience")


def _roles(cfg: IssuerConfig, claims: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the raw values of roles_claim, the Bulwark roles they map to, or default_role when none maps)."""
    raw_roles = claims.get(cfg.roles_claim)
    values: list[Any]
    if raw_roles is None:
        values = []
    elif isinstance(raw_roles, str):
        values = raw_roles.split()
    elif isinstance(raw_roles, list):
        values = raw_roles
    else:
        raise TokenRejectedError("claim_type_roles")
    if not all(isinstance(v, str) for v in values):
        raise TokenRejectedError("claim_type_roles")
    claims_roles = tuple(dict.fromkeys(values))
    roles = tuple(dict.fromkeys(cfg.role_map[v] for v in claims_roles if v in cfg.role_map))
    if not roles and cfg.default_role:
        roles = (cfg.default_role,)
    return claims_roles, roles
