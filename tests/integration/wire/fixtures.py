"""Helpers shared by the upstream integration tests: AWS env with dummy credentials, configs, clients."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bulwark.policy import UpstreamConfig
from bulwark.upstreams import UpstreamClients
from bulwark.upstreams.guard import BreakerRegistry

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLEBULWARK",
    "AWS_SECRET_ACCESS_KEY": "dummy-secret-for-local-wire-servers",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/bulwark-test-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/bulwark-test-credentials",
}


def use_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


def config(kind: str, **fields: Any) -> UpstreamConfig:
    defaults: dict[str, Any] = {"timeout_seconds": 2.0, "max_retries": 2, "circuit_failure_threshold": 3}
    # Loopback wire servers speak plain http, which the policy accepts only as `bulwark local` runs it.
    return UpstreamConfig.model_validate({"kind": kind, **defaults, **fields}, context={"local": True})


class RecordingSleep:
    """Sleeps for real (so deadlines hold) and records each wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


def new_clients(*, secretsmanager: Any | None = None) -> tuple[UpstreamClients, RecordingSleep]:
    sleep = RecordingSleep()
    return UpstreamClients(breakers=BreakerRegistry(), sleep=sleep, secretsmanager=secretsmanager), sleep


def deadline(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds
