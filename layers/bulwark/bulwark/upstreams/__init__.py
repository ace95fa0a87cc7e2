"""Upstream adapters: one per `kind` in the policy, all behind the `Upstream` protocol and the same guard.

`UpstreamClients` holds what lives once per container: the HTTP connection pool, boto3 clients (created lazily, on
first use), the API key cache and the circuit breakers. Tests inject their own (pointed at local wire servers).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bulwark.policy import UpstreamConfig
from bulwark.upstreams.base import ChatResult, ChatStream, Upstream, Usage
from bulwark.upstreams.guard import BreakerRegistry, Guard
from bulwark.upstreams.secrets import ApiKeyProvider

if TYPE_CHECKING:
    from bulwark.upstreams.transport import HttpTransport

# The adapters and the HTTP transport (urllib3, http.client, email) are imported where used: the invoker builds its
# UpstreamClients at init but its first adapter at its first request, so init does not pay for them.

__all__ = [
    "ChatResult",
    "ChatStream",
    "Upstream",
    "UpstreamClients",
    "Usage",
    "build_upstream",
]

# (service, region, endpoint_url, read_timeout) → client
AwsClientFactory = Callable[[str, str | None, str | None, float], Any]
SECRETS_ENDPOINT_ENV = "BULWARK_SECRETS_ENDPOINT_URL"


def _quantize(timeout: float) -> float:
    """Round a timeout down to a few distinct values, so per-timeout clients stay few (botocore has no per-call one)."""
    if timeout >= 2:
        return float(math.floor(timeout))
    return max(0.1, math.floor(timeout * 10) / 10)


class UpstreamClients:
    def __init__(
        self,
        *,
        aws_client_factory: AwsClientFactory | None = None,
        secretsmanager: Any | None = None,
        transport: HttpTransport | None = None,
        breakers: BreakerRegistry | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._factory = aws_client_factory or self._boto3_client
        self._secretsmanager = secretsmanager
        self._transport = transport
        self.breakers = breakers or BreakerRegistry()
        self.sleep = sleep
        self.keys = ApiKeyProvider(self.secretsmanager)
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None, str | None, float], Any] = {}
        self._session: Any = None

    @property
    def transport(self) -> HttpTransport:
        with self._lock:
            if self._transport is None:
                from bulwark.upstreams.transport import HttpTransport

                self._transport = HttpTransport()
            return self._transport

    def aws(self, service: str, *, region: str | None, endpoint_url: str | None, timeout: float) -> Any:
        key = (service, region, endpoint_url, _quantize(timeout))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._factory(*key)
                self._clients[key] = client
            return client

    def secretsmanager(self) -> Any:
        if self._secretsmanager is None:
            self._secretsmanager = self.aws(
                "secretsmanager", region=None, endpoint_url=os.environ.get(SECRETS_ENDPOINT_ENV), timeout=5.0
            )
        return self._secretsmanager

    def _boto3_client(self, service: str, region: str | None, endpoint_url: str | None, timeout: float) -> Any:
        import boto3
        from botocore.config import Config

        if self._session is None:
            self._session = boto3.session.Session()  # one session: service models load once
        config = Config(
            connect_timeout=min(timeout, 5.0),
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # the guard retries, inside the deadline
            tcp_keepalive=True,
        )
        return self._session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def build_upstream(model_name: str, cfg: UpstreamConfig, *, clients: UpstreamClients) -> Upstream:
    """The adapter for one model. Cheap: clients, pool and breaker state live in `clients`."""
    breaker = clients.breakers.get(model_name, cfg)
    guard = (
        Guard(model_name, cfg, breaker)
        if clients.sleep is None
        else Guard(model_name, cfg, breaker, sleep=clients.sleep)
    )
    if cfg.kind == "demo":
        from bulwark.upstreams.demo import DemoUpstream

        return DemoUpstream(model_name, cfg, guard=guard, transport=clients.transport, keys=clients.keys)
    if cfg.kind == "openai":
        from bulwark.upstreams.openai_http import OpenAIHttpUpstream

        return OpenAIHttpUpstream(model_name, cfg, guard=guard, transport=clients.transport, keys=clients.keys)
    if cfg.kind == "http":
        from bulwark.upstreams.legacy_http import LegacyHttpUpstream

        return LegacyHttpUpstream(model_name, cfg, guard=guard, transport=clients.transport, keys=clients.keys)
    if cfg.kind == "bedrock":
        from bulwark.upstreams.bedrock import BedrockUpstream

        return BedrockUpstream(
            model_name,
            cfg,
            guard=guard,
            client=lambda t: clients.aws(
                "bedrock-runtime", region=cfg.region, endpoint_url=cfg.endpoint_url, timeout=t
            ),
        )
    if cfg.kind == "sagemaker":
        from bulwark.upstreams.sagemaker import SageMakerUpstream

        return SageMakerUpstream(
            model_name,
            cfg,
            guard=guard,
            client=lambda t: clients.aws(
                "sagemaker-runtime", region=cfg.region, endpoint_url=cfg.endpoint_url, timeout=t
            ),
        )
    raise ValueError(f"model '{model_name}': unknown upstream kind '{cfg.kind}'")
