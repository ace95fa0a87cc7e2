"""The upstream's API key: from Secrets Manager (cached per container with a TTL), or from an env var when local.

A secret may be the bare key or a JSON object with `api_key` (the shape the console's "other type of secret" makes).
Fails closed: a key that cannot be read is an upstream error, never a call without credentials. Values are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bulwark.errors import UpstreamError
from bulwark.observability.logs import register_secret
from bulwark.policy import UpstreamConfig

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 300.0


class SecretUnavailableError(UpstreamError):
    default_message = "The model upstream is not available right now."


class ApiKeyProvider:
    def __init__(
        self,
        secretsmanager: Callable[[], Any],
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = secretsmanager  # called lazily: no client is built for upstreams without a secret
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}

    def api_key(self, cfg: UpstreamConfig) -> str | None:
        """The key for `cfg`, or None if it is configured without one (e.g. a local vLLM)."""
        if cfg.api_key_secret:
            return self._from_secret(cfg.api_key_secret)
        if cfg.api_key_env:
            value = os.environ.get(cfg.api_key_env)
            if not value:
                logger.error("upstream API key env var is empty or unset", extra={"env_var": cfg.api_key_env})
                raise SecretUnavailableError()
            register_secret(value)
            return value
        return None

    def invalidate(self, secret_id: str) -> None:
        """Drop a cached key (e.g. after the upstream answered 401: the secret may have been rotated)."""
        with self._lock:
            self._cache.pop(secret_id, None)

    def _from_secret(self, secret_id: str) -> str:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(secret_id)
            if hit is not None and hit[1] > now:
                return hit[0]
        try:
            response = self._client().get_secret_value(SecretId=secret_id)
        except Exception as exc:  # any SDK failure: fail closed, log the class only
            logger.error("cannot read the upstream API key secret", extra={"error": type(exc).__name__})
            raise SecretUnavailableError() from None
        key = _key_from_secret_string(response.get("SecretString"))
        register_secret(key)  # an upstream key has no recognisable shape: redact this exact value from every log line
        with self._lock:
            self._cache[secret_id] = (key, now + self._ttl)
        return key


def _key_from_secret_string(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        logger.error("upstream API key secret has no SecretString")
        raise SecretUnavailableError()
    text = raw.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        key = value.get("api_key") if isinstance(value, dict) else None
        if not isinstance(key, str) or not key:
            logger.error("upstream API key secret is JSON without a string 'api_key'")
            raise SecretUnavailableError()
        return key
    return text
