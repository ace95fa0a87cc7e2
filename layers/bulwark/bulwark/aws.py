"""AWS clients: created once per container, with short timeouts, and injected into the domain code.

boto3 is imported lazily so that modules which only need the types stay cheap to import; every function needs at
least one client, so the import happens once at cold start, not per request.
"""

from __future__ import annotations

import threading
from functools import cache, lru_cache
from typing import Any

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _config(connect: float, read: float, attempts: int) -> Any:
    from botocore.config import Config

    return Config(
        connect_timeout=connect,
        read_timeout=read,
        retries={"max_attempts": attempts, "mode": "standard"},
        tcp_keepalive=True,
        max_pool_connections=32,
    )


@cache
def client(service: str, *, connect_timeout: float = 1.0, read_timeout: float = 2.0, max_attempts: int = 2) -> Any:
    """One client per (service, timeouts) per container. DynamoDB calls must fail fast so we can fail closed."""
    with _lock:  # boto3 session creation is not thread-safe
        return _session().client(service, config=_config(connect_timeout, read_timeout, max_attempts))


def dynamodb() -> Any:
    return client("dynamodb")


def lambda_client() -> Any:
    # The invoker may take up to the API Gateway integration limit; no SDK retries (the invoker is not idempotent).
    return client("lambda", connect_timeout=1.0, read_timeout=29.0, max_attempts=1)


def secretsmanager() -> Any:
    return client("secretsmanager")
