"""AWS Signature Version 4 for Bulwark's own hot-path AWS calls (see bulwark.aws.wire).

Why not botocore here: on every request botocore spends 1.5-2 ms of CPU per call (event hooks, model-driven
serialisation, parsing, retry handlers), and importing it is most of a function's cold start. Signing itself is four
HMACs a day plus two SHA-256s per call; this module does exactly that, and a unit test proves the signatures equal
botocore's for the same request and clock.

Credentials come from the environment the Lambda runtime sets (and the local stack mimics). Anywhere else, e.g. an
instance profile or SSO, botocore's credential chain is asked once, and again whenever those credentials near expiry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

ALGORITHM = "AWS4-HMAC-SHA256"
_REFRESH_MARGIN_S = 300  # renew refreshable credentials this long before they expire, as botocore does


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = ""  # empty only if access_key is too: a frozen record with a secret never prints it
    token: str | None = None
    expires_at: float | None = None  # epoch seconds; None for long-lived or runtime-managed credentials

    def __repr__(self) -> str:  # never the secret or the token in a log line or a traceback
        return f"Credentials(access_key={self.access_key[:4]}…)"


class CredentialsUnavailable(Exception):
    """No credentials could be found: a call cannot be signed (callers fail closed)."""


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        return None
    return Credentials(access, secret, env.get("AWS_SESSION_TOKEN") or None)


def _credentials_from_botocore() -> Credentials | None:
    import botocore.session  # only off Lambda: the full credential chain (profiles, SSO, IMDS, containers)

    found = botocore.session.get_session().get_credentials()
    if found is None:
        return None
    frozen = found.get_frozen_credentials()
    expiry = getattr(found, "_expiry_time", None)
    expires_at = expiry.timestamp() if isinstance(expiry, dt.datetime) else None
    return Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token, expires_at)


class CredentialSource:
    """The current credentials, resolved once and renewed before they expire. Thread-safe."""

    def __init__(self, resolve: Callable[[], Credentials | None] | None = None) -> None:
        self._resolve = resolve or (lambda: credentials_from_env() or _credentials_from_botocore())
        self._lock = threading.Lock()
        self._current: Credentials | None = None

    def get(self) -> Credentials:
        current = self._current
        if current is not None and (current.expires_at is None or current.expires_at - time.time() > _REFRESH_MARGIN_S):
            return current
        with self._lock:
            if self._current is current:
                try:
                    self._current = self._resolve()
                except Exception as exc:  # any failure of the chain: no credentials, fail closed
                    raise CredentialsUnavailable(type(exc).__name__) from None
            if self._current is None:
                raise CredentialsUnavailable("no AWS credentials found")
            return self._current


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's signing key for one day, region and service (the signer's, and the local stack's verifier's)."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """A query string as SigV4 signs it (and as it can be sent): names and values percent-encoded, sorted."""
    encoded = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def string_to_sign(stamp: str, scope: str, canonical_request: str) -> str:
    return f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()}"


class Signer:
    """SigV4 for one (region, service). The derived key is cached per day and secret key."""

    def __init__(self, region: str, service: str, credentials: CredentialSource) -> None:
        self.region = region
        self.service = service
        self._credentials = credentials
        self._key_cache: tuple[str, str, bytes] | None = None  # (date, secret key, signing key)

    def _signing_key(self, date: str, secret: str) -> bytes:
        cached = self._key_cache
        if cached is not None and cached[0] == date and hmac.compare_digest(cached[1], secret):
            return cached[2]
        key = derive_signing_key(secret, date, self.region, self.service)
        self._key_cache = (date, secret, key)
        return key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        *,
        query: str = "",
        now: dt.datetime | None = None,
    ) -> dict[str, str]:
        """Return ``headers`` plus Host, X-Amz-Date, the session token and Authorization.

        ``path`` is the request path as sent (already percent-encoded, no query string); ``query`` the query string in
        canonical form (see canonical_query); all given headers are signed. Header names are expected in their final
        case.
        """
        creds = self._credentials.get()
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        signed = {**headers, "host": host, "x-amz-date": stamp}
        if creds.token:
            signed["x-amz-security-token"] = creds.token
        canonical_headers = sorted((name.lower(), " ".join(value.split())) for name, value in signed.items())
        header_names = ";".join(name for name, _ in canonical_headers)
        canonical = "\n".join(
            [
                method,
                # Every service but S3 signs the path encoded once more (the "double encoding" of the SigV4 spec).
                urllib.parse.quote(path, safe="/~"),
                query,
                "".join(f"{name}:{value}\n" for name, value in canonical_headers),
                header_names,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = string_to_sign(stamp, scope, canonical)
        signature = hmac.new(self._signing_key(date, creds.secret_key), to_sign.encode("utf-8"), hashlib.sha256)
        signed["Authorization"] = (
            f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={header_names}, "
            f"Signature={signature.hexdigest()}"
        )
        return signed
