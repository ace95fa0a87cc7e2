"""The server-side secret that API keys are hashed under: Secrets Manager when deployed, a local file when local."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulwark.settings import Settings

_CACHE_SECONDS = 300.0


class PepperUnavailable(Exception):
    """The hashing secret could not be read: callers fail closed."""


class Pepper:
    def __init__(self, settings: Settings, secrets_client: Callable[[], Any] | None = None) -> None:
        self._settings = settings
        self._secrets_client = secrets_client
        self._value: bytes | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> bytes:
        now = time.monotonic()
        value = self._value
        if value is not None and now - self._loaded_at < _CACHE_SECONDS:
            return value
        with self._lock:
            if self._value is None or time.monotonic() - self._loaded_at >= _CACHE_SECONDS:
                self._value = self._load()
                self._loaded_at = time.monotonic()
            return self._value

    def _load(self) -> bytes:
        s = self._settings
        if s.hmac_secret_file:
            try:
                raw = Path(s.hmac_secret_file).read_text(encoding="ascii").strip()
            except OSError as exc:
                raise PepperUnavailable("local hashing secret file is unreadable") from exc
        elif s.hmac_secret_id and self._secrets_client is not None:
            try:
                raw = self._secrets_client().get_secret_value(SecretId=s.hmac_secret_id)["SecretString"].strip()
            except Exception as exc:
                raise PepperUnavailable("hashing secret is unavailable") from exc
        else:
            raise PepperUnavailable("no hashing secret is configured")
        if len(raw) < 32:
            raise PepperUnavailable("hashing secret is too short")
        return raw.encode("utf-8")


def create_local_pepper_file(path: Path) -> None:
    """Create the local hashing secret once (0600)."""
    import secrets

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32), encoding="ascii")
