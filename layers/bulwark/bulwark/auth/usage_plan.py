"""API Gateway usage plans: coarse per-caller throttling in front of the functions, at no DynamoDB cost.

API Gateway meters a request against the usage plan of the API key the authorizer names in `usageIdentifierKey`
(`ApiKeySourceType: AUTHORIZER`). That value is not a credential — authentication stays with the authorizer — so it is
derived from the caller's principal: the CLI registers the same value as an API Gateway API key when it creates a
Bulwark key on a stack with a usage plan (template parameter `EnableUsagePlan`).
"""

from __future__ import annotations

import hashlib
from typing import Any

PREFIX = "bulwark-usage-"


def usage_identifier(principal: str) -> str:
    """A stable, non-secret identifier (API Gateway requires at least 20 characters)."""
    return PREFIX + hashlib.sha256(principal.encode("utf-8")).hexdigest()[:40]


def register_key(apigateway: Any, usage_plan_id: str, principal: str, name: str) -> str:
    """Create the API Gateway API key for a Bulwark key and attach it to the usage plan; returns its id."""
    created = apigateway.create_api_key(
        name=f"bulwark-{name}-{principal.rsplit(':', maxsplit=1)[-1]}",
        value=usage_identifier(principal),
        enabled=True,
        description="Usage-plan meter for a Bulwark key (not a credential).",
    )
    apigateway.create_usage_plan_key(usagePlanId=usage_plan_id, keyId=created["id"], keyType="API_KEY")
    return str(created["id"])


def disable_key(apigateway: Any, principal: str) -> None:
    """Disable the meter of a revoked key (the authorizer refuses it anyway)."""
    value = usage_identifier(principal)
    for page in apigateway.get_paginator("get_api_keys").paginate(includeValues=True):
        for item in page.get("items", []):
            if item.get("value") == value:
                apigateway.update_api_key(
                    apiKey=item["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]
                )
