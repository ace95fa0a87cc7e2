"""The server-side secret that API keys are hashed under: Secrets Manager when deployed, a local file when local.

Versioned, so it can rotate without invalidating issued keys. The secret's value is either one string (version 1,
the format before versioning) or a JSON document::

    {"current": 2, "versions": {"1": "<old secret>", "2": "<new secret>"}}

Each stored key hash names the version it was made with; the authorizer verifies with that version and new hashes
(create, rotate) use `current`. Retiring a version (removing it from the document) invalidates only the keys still
hashed under it; `bulwark keys list` shows which versions are in use, and `bulwark keys rotate` moves a key to the
current one. See docs/SECURITY.md ("Rotating the key-hashing secret").
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bulwark.settings import Settings

_CACHE_SECONDS = 300.0
_RELOAD_ON_UNKNOWN_SECONDS = 5.0  # a version another container just added is picked up this fast
_MIN_LENGTH = 32


class SecretsClient(Protocol):
    """The Secrets Manager read made here (boto3's client or the lean one in bulwark.aws)."""

    def get_secret_value(self, *, SecretId: str) -> Any: ...  # noqa: N803 - the AWS parameter name


class PepperUnavailable(Exception):
    """The hashing secret could not be read: callers fail closed."""


@dataclass(frozen=True, repr=False)
class PepperVersions:
    current: int
    values: dict[int, bytes]

    def __repr__(self) -> str:  # never show a secret, not even in a traceback
        return f"PepperVersions(current={self.current}, versions={sorted(self.values)})"

    def to_text(self) -> str:
        versions = {str(v): value.decode("utf-8") for v, value in sorted(self.values.items())}
        return json.dumps({"current": self.current, "versions": versions}, separators=(",", ":"))

    def with_new_version(self) -> PepperVersions:
        """A fresh random secret as the next version, made current; every older version stays for verification."""
        nxt = max(self.values) + 1
        return PepperVersions(nxt, {**self.values, nxt: secrets.token_hex(32).encode("ascii")})


def parse_pepper(raw: str) -> PepperVersions:
    """The secret's value in either format; PepperUnavailable if it is malformed or a version is too short."""
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            doc = json.loads(raw)
            values = {int(k): str(v).strip().encode("utf-8") for k, v in doc["versions"].items()}
            current = int(doc["current"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PepperUnavailable("hashing secret document is malformed") from exc
    else:
        values, current = {1: raw.encode("utf-8")}, 1
    if current not in values or any(v < 1 for v in values):
        raise PepperUnavailable("hashing secret has no valid current version")
    if any(len(value) < _MIN_LENGTH for value in values.values()):
        raise PepperUnavailable("hashing secret is too short")
    return PepperVersions(current, values)


class Pepper:
    def __init__(self, settings: Settings, secrets_client: Callable[[], SecretsClient] | None = None) -> None:
        self._settings = settings
        self._secrets_client = secrets_client
        self._value: PepperVersions | None = None
        self._loaded_at = 0.0
        self._forced_at = -_RELOAD_ON_UNKNOWN_SECONDS
        self._lock = threading.Lock()

    def current(self) -> tuple[int, bytes]:
        """The version new hashes are made with, and its secret."""
        loaded = self._versions()
        return loaded.current, loaded.values[loaded.current]

    def get(self) -> bytes:
        return self.current()[1]

    def version(self, version: int) -> bytes | None:
        """The secret of `version`, or None if the secret no longer (or not yet, after a reload) holds it."""
        value = self._versions().values.get(version)
        # A version this container has not seen (just rotated in) is fetched at once; a retired one at most every
        # few seconds. The version comes from the stored hash, never from the caller's credential.
        if value is None and time.monotonic() - self._forced_at >= _RELOAD_ON_UNKNOWN_SECONDS:
            self._forced_at = time.monotonic()
            value = self._versions(force=True).values.get(version)
        return value

    def _versions(self, force: bool = False) -> PepperVersions:
        value = self._value
        if value is not None and not force and time.monotonic() - self._loaded_at < _CACHE_SECONDS:
            return value
        with self._lock:
            if force or self._value is None or time.monotonic() - self._loaded_at >= _CACHE_SECONDS:
                self._value = parse_pepper(self._load_text())
                self._loaded_at = time.monotonic()
            return self._value

    def _load_text(self) -> str:
        s = self._settings
        if s.hmac_secret_file:
            try:
                return Path(s.hmac_secret_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise PepperUnavailable("local hashing secret file is unreadable") from exc
        if s.hmac_secret_id and self._secrets_client is not None:
            try:
                return str(self._secrets_client().get_secret_value(SecretId=s.hmac_secret_id)["SecretString"])
            except Exception as exc:
                raise PepperUnavailable("hashing secret is unavailable") from exc
        raise PepperUnavailable("no hashing secret is configured")

    def rotate(self) -> PepperVersions:
        """Add a new current version to the stored secret (operator credentials; the CLI's `keys rotate-pepper`)."""
        updated = parse_pepper(self._load_text()).with_new_version()
        s = self._settings
        if s.hmac_secret_file:
            Path(s.hmac_secret_file).write_text(updated.to_text(), encoding="utf-8")
        elif s.hmac_secret_id and self._secrets_client is not None:
            # Only the operator's client (boto3, from the CLI) writes; the functions' lean client cannot.
            put = getattr(self._secrets_client(), "put_secret_value", None)
            if put is None:
                raise PepperUnavailable("this client cannot write the hashing secret")
            put(SecretId=s.hmac_secret_id, SecretString=updated.to_text())
        else:
            raise PepperUnavailable("no hashing secret is configured")
        with self._lock:
            self._value, self._loaded_at = updated, time.monotonic()
        return updated


def create_local_pepper_file(path: Path) -> None:
    """Create the local hashing secret once (0600)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32), encoding="ascii")
