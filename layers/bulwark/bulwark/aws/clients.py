"""AWS clients: created once per container, with short timeouts, and injected into the domain code.

The calls on the request path (DynamoDB, Lambda Invoke, Secrets Manager) use the lean signed clients of
bulwark.aws.wire; boto3 is imported only for what is rare (Bedrock, SageMaker, the CLI), lazily.
"""

from __future__ import annotations

import os
import threading
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from bulwark.aws.sigv4 import CredentialSource

if TYPE_CHECKING:
    from bulwark.aws.appconfig import AppConfigDataClient
    from bulwark.aws.invoke_stream import LambdaStreamClient
from bulwark.aws.wire import DynamoDBClient, Endpoint, KmsClient, LambdaClient, SecretsManagerClient, resolve_endpoint

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


# ------------------------------------------------------------------------------ the hot path: lean clients (aws_wire)


@lru_cache(maxsize=1)
def _credentials() -> CredentialSource:
    return CredentialSource()


def _region() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        return str(_session().region_name or "us-east-1")  # off Lambda only: the SDK's configured region
    return region


def _wire_kwargs(service: str, env_name: str, *, read_timeout: float, max_attempts: int) -> dict[str, Any]:
    region = _region()
    return {
        "service": service,
        "endpoint": resolve_endpoint(env_name, service, region),
        "region": region,
        "credentials": _credentials(),
        "connect_timeout": 1.0,
        "read_timeout": read_timeout,
        "max_attempts": max_attempts,
    }


@lru_cache(maxsize=1)
def dynamodb() -> DynamoDBClient:
    """DynamoDB calls must fail fast so we can fail closed: 1 s to connect, 2 s to answer, one retry."""
    return _dynamodb(_wire_kwargs("dynamodb", "DYNAMODB", read_timeout=2.0, max_attempts=2))


def dynamodb_at(
    endpoint_url: str,
    *,
    region: str = "us-east-1",
    credentials: CredentialSource | None = None,
    read_timeout: float = 2.0,
) -> DynamoDBClient:
    """The same client for an explicit endpoint (DynamoDB Local in tests and benchmarks). `read_timeout` is the
    whole call's deadline."""
    return _dynamodb(
        {
            "service": "dynamodb",
            "endpoint": Endpoint.parse(endpoint_url),
            "region": region,
            "credentials": credentials or _credentials(),
            "connect_timeout": 1.0,
            "read_timeout": read_timeout,
            "max_attempts": 2,
        }
    )


def _dynamodb(kwargs: dict[str, Any]) -> DynamoDBClient:
    return DynamoDBClient(target_prefix="DynamoDB_20120810", json_version="1.0", check_crc32=True, **kwargs)


@lru_cache(maxsize=1)
def lambda_client() -> LambdaClient:
    # The invoker may take up to the API Gateway integration limit; never retried (the invoker is not idempotent).
    return LambdaClient(**_wire_kwargs("lambda", "LAMBDA", read_timeout=29.0, max_attempts=1))


def lambda_stream_client() -> LambdaStreamClient:
    """InvokeWithResponseStream to the invoker. The read timeout is the longest silence allowed inside a stream: API
    Gateway's idle timeout for a streamed response (5 minutes, regional endpoints)."""
    from bulwark.aws.invoke_stream import LambdaStreamClient

    return LambdaStreamClient(**_wire_kwargs("lambda", "LAMBDA", read_timeout=300.0, max_attempts=1))


@lru_cache(maxsize=1)
def kms() -> KmsClient:
    """GenerateMac / VerifyMac on the request path: fail fast (1 s to answer, one retry), then fail closed."""
    kwargs = _wire_kwargs("kms", "KMS", read_timeout=1.0, max_attempts=2)
    return KmsClient(target_prefix="TrentService", json_version="1.1", **kwargs)


@lru_cache(maxsize=1)
def secretsmanager() -> SecretsManagerClient:
    kwargs = _wire_kwargs("secretsmanager", "SECRETS_MANAGER", read_timeout=2.0, max_attempts=2)
    return SecretsManagerClient(target_prefix="secretsmanager", json_version="1.1", **kwargs)


@lru_cache(maxsize=1)
def appconfigdata() -> AppConfigDataClient:
    """The policy's AppConfigData session (bulwark.policy_source): polled once per cache period, off the hot path; a
    slow answer must not hold a request long (the last good policy stays in force)."""
    from bulwark.aws.appconfig import AppConfigDataClient

    kwargs = _wire_kwargs("appconfig", "APPCONFIGDATA", read_timeout=2.0, max_attempts=2)
    # AppConfigData signs as "appconfig" but lives at appconfigdata.<region>.amazonaws.com.
    kwargs["endpoint"] = resolve_endpoint("APPCONFIGDATA", "appconfigdata", kwargs["region"])
    return AppConfigDataClient(**kwargs)
