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
        made = _session().client(service, config=_config(connect_timeout, read_timeout, max_attempts))
    _freeze_user_agent(made)
    return made


def _freeze_user_agent(made: Any) -> None:
    """botocore rebuilds its User-Agent string twice per call (~0.3 ms of CPU on the hot path, measured); the
    string only carries SDK telemetry, so build it once per client. Best effort: a botocore without the attribute is
    left as it is."""
    creator = getattr(made, "_user_agent_creator", None)
    if creator is None or not callable(getattr(creator, "to_string", None)):
        return
    try:
        frozen = creator.to_string()
    except Exception:  # telemetry only: keep botocore's own behaviour
        return
    creator.to_string = lambda: frozen


def dynamodb() -> Any:
    return client("dynamodb")


def lambda_client() -> Any:
    # The invoker may take up to the API Gateway integration limit; no SDK retries (the invoker is not idempotent).
    return client("lambda", connect_timeout=1.0, read_timeout=29.0, max_attempts=1)


def secretsmanager() -> Any:
    return client("secretsmanager")
