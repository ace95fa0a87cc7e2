"""Shared helpers for the benchmarks: percentiles, progress on stderr, tables, keys and events.

Everything here talks to 127.0.0.1 only. Nothing is timed against a target: the scripts print figures and the
targets next to them.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the markdown tables."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def pct(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    # The smallest sample with at least q% of them at or below it: rank ceil(q * n / 100), counted from 1. (Rounding
    # q * n + 0.5 instead took the maximum for p99 of 100 samples, one rank too high whenever q * n is whole.)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


def median(samples: Iterable[float]) -> float:
    return statistics.median(list(samples))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; `align` is one character per column, 'l' or 'r' (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def create_key(env: dict[str, str], endpoint: str, *, role: str = "developer", name: str = "bench") -> str:
    """Create an API key on a running local stack (tables and hashing secret from its CLI environment)."""
    from bulwark.auth.key_admin import KeyAdmin
    from bulwark.auth.pepper import Pepper
    from bulwark.settings import Settings
    from bulwark.store.counters_table import CountersTable
    from bulwark.store.keys_table import KeysTable
    from bulwark_dev.local.dynamodb_local import local_dynamodb_client

    cfg = Settings.from_env(env)
    ddb = local_dynamodb_client(endpoint)
    admin = KeyAdmin(KeysTable(ddb, cfg.keys_table), CountersTable(ddb, cfg.counters_table), Pepper(cfg))
    secret, _ = admin.create(name=name, role=role)
    return secret


def authorizer_event(
    credential: str, *, method: str = "POST", resource: str = "/v1/chat/completions"
) -> dict[str, Any]:
    """A REST API REQUEST authorizer event as API Gateway sends it (identity sources: Authorization, x-api-key)."""
    path = resource
    arn = f"arn:aws:execute-api:us-east-1:000000000000:abcdef1234/v1api/{method}{path}"
    headers = {
        "Authorization": f"Bearer {credential}",
        "Content-Type": "application/json",
        "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "OpenAI/Python 1.0",
        "X-Forwarded-For": "203.0.113.7",
    }
    return {
        "type": "REQUEST",
        "methodArn": arn,
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1api{path}",
            "accountId": "000000000000",
            "apiId": "abcdef1234",
            "stage": "v1api",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "OpenAI/Python 1.0"},
        },
    }


def chat_body(text: str = "Say hello in three words.", max_tokens: int = 32) -> bytes:
    return json.dumps(
        {"model": "demo-echo", "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    ).encode()
