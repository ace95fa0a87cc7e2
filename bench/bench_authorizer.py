"""Authorizer decision time, warm, in-process against DynamoDB Local: API key and JWT, cache hit and miss.

`Authorizer.authorize` is called with real REQUEST events (the shape API Gateway sends) against the template's keys
table in DynamoDB Local. "Miss" clears the decision cache before every call (so every decision does its GetItem and
hash check, or its JWT signature check); "hit" repeats the same credential within the 10 s cache. Store reads per
decision come from `Authorizer.store_reads`.

Run: `python bench/bench_authorizer.py [--n 2000]` (starts and stops its own DynamoDB Local).
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, authorizer_event, pct, say, table, verdict

from bulwark.api.events import AuthorizerRequestEvent
from bulwark.auth.decision import Authorizer
from bulwark.auth.pepper import Pepper
from bulwark.policy import IssuerConfig, Policy, current_policy
from bulwark.settings import Settings
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeysTable

ISSUER = "https://issuer.example.com"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_setup(policy: Policy) -> tuple[Policy, Any, str]:
    """A policy with one issuer, a verifier whose JWKS is served from memory, and a valid RS256 token."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from bulwark.auth.jwks import JwksCache
    from bulwark.auth.jwt_verify import JwtVerifier

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.public_key().public_numbers().n
    body = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": _b64u(n.to_bytes(256, "big")), "e": "AQAB"}]}).encode()
    issuer = IssuerConfig(
        name="bench",
        issuer=ISSUER,
        audience=("bulwark",),
        jwks_url=ISSUER + "/jwks.json",
        default_role="developer",
    )
    with_issuer = policy.model_copy(update={"issuers": (issuer,)})
    verifier = JwtVerifier([issuer], JwksCache(fetch=lambda url, timeout: body))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "bulwark", "sub": "user-1", "iat": now, "exp": now + 3600, "scope": "chat"}
    token = pyjwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    return with_issuer, verifier, token


def _measure(authorizer: Authorizer, event: AuthorizerRequestEvent, n: int, *, miss: bool) -> tuple[list[float], float]:
    for _ in range(50):  # warm: connection pool, first touch of last-used, caches
        if miss:
            authorizer._cache.clear()  # a cache miss: what a new container sees
        authorizer.authorize(event)
    reads_before = authorizer.store_reads
    samples = []
    for _ in range(n):
        if miss:
            authorizer._cache.clear()  # a cache miss: what a new container sees
        t0 = time.perf_counter_ns()
        decision = authorizer.authorize(event)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        assert not decision.context.refusal, decision.context
    return samples, (authorizer.store_reads - reads_before) / n


def run(endpoint: str, table_names: dict[str, str], n: int) -> str:
    from bulwark.auth.key_admin import KeyAdmin
    from bulwark_dev.local.dynamodb_local import local_dynamodb_client

    tmp = Path(tempfile.mkdtemp(prefix="bulwark-bench-"))
    secret_file = tmp / "hmac.key"
    secret_file.write_text("ab" * 32 + "\n")
    keys_name = next(v for k, v in table_names.items() if "key" in k.lower())
    counters_name = next(v for k, v in table_names.items() if "counter" in k.lower())
    cfg = Settings(keys_table=keys_name, counters_table=counters_name, hmac_secret_file=str(secret_file))
    ddb = local_dynamodb_client(endpoint)
    keys, counters, pepper = KeysTable(ddb, keys_name), CountersTable(ddb, counters_name), Pepper(cfg)
    api_key, _ = KeyAdmin(keys, counters, pepper).create(name="bench", role="developer")

    base = current_policy()
    policy, verifier, token = _jwt_setup(base)
    get_policy: Callable[[], Policy] = lambda: policy  # noqa: E731
    authorizer = Authorizer(policy=get_policy, keys=keys, counters=counters, pepper=pepper, jwt=lambda: verifier)

    rows = []
    results: dict[str, tuple[float, float, float]] = {}
    for label, credential in (("API key", api_key), ("JWT (RS256)", token)):
        event = AuthorizerRequestEvent.model_validate(authorizer_event(credential))
        for miss in (False, True):
            say(f"authorizer: {label}, cache {'miss' if miss else 'hit'}, n={n}")
            samples, reads = _measure(authorizer, event, n, miss=miss)
            p50, p99 = pct(samples, 50), pct(samples, 99)
            results[f"{label}/{'miss' if miss else 'hit'}"] = (p50, p99, reads)
            rows.append((label, "miss" if miss else "hit", n, f"{p50:.3f}", f"{p99:.3f}", f"{reads:.2f}"))

    # The whole handler body (event model, decision, the "allowed" log line through the redacting formatter).
    import os

    from bulwark.observability.logs import make_logger
    from bulwark.observability.metrics import make_metrics
    from bulwark.services.authorizer_service import AuthorizerService

    with open(os.devnull, "w") as devnull:
        logger = make_logger(stream=devnull)
        service = AuthorizerService(authorizer, logger, make_metrics(logger))
        raw = authorizer_event(api_key)
        for _ in range(50):
            service.handle(raw)
        say(f"authorizer: AuthorizerService.handle, API key, cache hit, n={n}")
        handler_samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            service.handle(raw)
            handler_samples.append((time.perf_counter_ns() - t0) / 1e6)
    h50, h99 = pct(handler_samples, 50), pct(handler_samples, 99)
    label = "API key, whole handler (event model + decision + log line)"
    rows.append((label, "hit", n, f"{h50:.3f}", f"{h99:.3f}", "0.00"))

    hit = results["API key/hit"]
    key_miss = results["API key/miss"]
    jwt_miss = results["JWT (RS256)/miss"]
    targets = [
        ("API key, warm cache hit: p99 < 1 ms (decision)", f"{hit[1]:.3f} ms", verdict(hit[1] < 1.0)),
        ("API key, warm cache hit: p99 < 1 ms (whole handler)", f"{h99:.3f} ms", verdict(h99 < 1.0)),
        (
            "API key, cache miss: exactly 1 store read",
            f"{key_miss[2]:.2f} reads",
            verdict(abs(key_miss[2] - 1.0) < 1e-9),
        ),
        ("JWT, cache miss: 0 store reads", f"{jwt_miss[2]:.2f} reads", verdict(jwt_miss[2] == 0)),
    ]
    return "\n".join(
        [
            "### Authorizer decision time (Authorizer.authorize in-process, DynamoDB Local, warm)",
            "",
            table(["credential", "decision cache", "n", "p50 ms", "p99 ms", "store reads / decision"], rows),
            "",
            table(["target", "measured", ""], targets),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    from bulwark_dev.local.dynamodb_local import DynamoDBLocal, create_tables
    from bulwark_dev.local.template_model import load_template

    template = load_template(ROOT / "template.yaml")
    say("authorizer: starting DynamoDB Local")
    with DynamoDBLocal(progress=None) as ddb:
        create_tables(ddb.client(), template.tables, template.table_names)
        print(run(ddb.endpoint_url, template.table_names, args.n))


if __name__ == "__main__":
    main()
