"""Environment settings, checked once per container at cold start (pydantic), never read ad hoc elsewhere."""

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

PII_MEMO_CHARS = 4_000_000  # the validator's PII memo, in characters (bulwark.guardrails.pii_memo)
# How long a policy from AppConfig is cached: a pushed change is in force within this plus a request's own time
# (template.yaml sets 45 s, inside the 60 s the operations promise). Deployed, at least AppConfigData's minimum poll
# interval; under `bulwark local` as low as 1 s (the end-to-end tests).
POLICY_TTL_SECONDS = 45
POLICY_TTL_BOUNDS = (15, 300)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    keys_table: str = Field(default="", description="BULWARK_KEYS_TABLE")
    counters_table: str = Field(default="", description="BULWARK_COUNTERS_TABLE")
    hmac_secret_id: str | None = Field(default=None, description="BULWARK_HMAC_SECRET_ID (Secrets Manager, deployed)")
    hmac_secret_file: str | None = Field(default=None, description="BULWARK_HMAC_SECRET_FILE (local)")
    invoker_function: str | None = Field(default=None, description="BULWARK_INVOKER_FUNCTION")
    idempotency_table: str | None = Field(default=None, description="BULWARK_IDEMPOTENCY_TABLE")
    demo_model_url: str | None = Field(default=None, description="BULWARK_DEMO_MODEL_URL (local demo upstream)")
    invoker_mac_key: str | None = Field(default=None, description="BULWARK_INVOKER_MAC_KEY (KMS HMAC key ARN)")
    region: str = "us-east-1"
    local: bool = Field(default=False, description="BULWARK_LOCAL=1 under `bulwark local` (plain http to loopback)")
    pii_memo_chars: int = Field(default=PII_MEMO_CHARS, ge=0, description="BULWARK_PII_MEMO_CHARS (0: off)")
    # The validator's integration streams (API Gateway responseTransferMode STREAM): `stream: true` is forwarded as
    # the model writes it, over InvokeWithResponseStream to the invoker.
    stream_responses: bool = Field(default=False, description="BULWARK_STREAM_RESPONSES=1")
    # The policy's AppConfig application, environment and configuration profile (ids or names); all three or none.
    policy_appconfig: tuple[str, str, str] | None = Field(default=None, description="BULWARK_POLICY_APPCONFIG_*")
    policy_ttl_seconds: int = Field(default=POLICY_TTL_SECONDS, description="BULWARK_POLICY_TTL_SECONDS")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Self:
        e = os.environ if env is None else env
        return cls(
            keys_table=e.get("BULWARK_KEYS_TABLE", ""),
            counters_table=e.get("BULWARK_COUNTERS_TABLE", ""),
            hmac_secret_id=e.get("BULWARK_HMAC_SECRET_ID") or None,
            hmac_secret_file=e.get("BULWARK_HMAC_SECRET_FILE") or None,
            invoker_function=e.get("BULWARK_INVOKER_FUNCTION") or None,
            idempotency_table=e.get("BULWARK_IDEMPOTENCY_TABLE") or None,
            demo_model_url=e.get("BULWARK_DEMO_MODEL_URL") or None,
            invoker_mac_key=e.get("BULWARK_INVOKER_MAC_KEY") or None,
            region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
            local=e.get("BULWARK_LOCAL", "") == "1",
            pii_memo_chars=e.get("BULWARK_PII_MEMO_CHARS") or PII_MEMO_CHARS,
            stream_responses=e.get("BULWARK_STREAM_RESPONSES", "") == "1",
            policy_appconfig=_appconfig_ids(e),
            policy_ttl_seconds=_policy_ttl(e),
        )


def _appconfig_ids(e: Mapping[str, str]) -> tuple[str, str, str] | None:
    ids = tuple(e.get(f"BULWARK_POLICY_APPCONFIG_{part}", "") for part in ("APPLICATION", "ENVIRONMENT", "PROFILE"))
    if not any(ids):
        return None
    if not all(ids):
        # Half a configuration is a deployment mistake: refuse to start rather than silently serve the layer's file.
        raise ValueError("BULWARK_POLICY_APPCONFIG_APPLICATION, _ENVIRONMENT and _PROFILE go together")
    return ids[0], ids[1], ids[2]


def _policy_ttl(e: Mapping[str, str]) -> int:
    low, high = POLICY_TTL_BOUNDS
    if e.get("BULWARK_LOCAL", "") == "1":
        low = 1
    try:
        asked = int(e.get("BULWARK_POLICY_TTL_SECONDS") or POLICY_TTL_SECONDS)
    except ValueError:
        asked = POLICY_TTL_SECONDS
    return min(max(asked, low), high)


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()
