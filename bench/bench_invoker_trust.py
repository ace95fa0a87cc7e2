"""What the validator -> invoker MAC and the local IAM endpoint cost per request, measured on `bulwark local`.

One stack (DynamoDB Local, the functions, the IAM-enforcing AWS endpoint with its KMS stand-in), then, interleaved in
the same sitting, N times each, with the functions' own lean clients and credentials:

- baseline: one DynamoDB GetItem through the endpoint (one signed AWS round trip, authorized);
- GenerateMac as the validator (what each request adds to the validator);
- VerifyMac and the replay claim (a conditional PutItem) as the invoker, one after the other (the invoker's addition);
- the same DynamoDB GetItem straight to DynamoDB Local (what the IAM endpoint's hop costs locally).

The added ms per request is p50(GenerateMac) + p50(VerifyMac + claim); in AWS these are in-region KMS and DynamoDB
calls, so the local figure says how many round trips are added (two KMS, one DynamoDB), not their AWS latency.

Run: `python bench/bench_invoker_trust.py [--n 200]`.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, pct, say, table

from bulwark.auth.invoker_trust import MacSigner, MacVerifier
from bulwark.aws.clients import dynamodb_at
from bulwark.aws.sigv4 import Credentials, CredentialSource
from bulwark.aws.wire import Endpoint, KmsClient
from bulwark.services.invoker_client import InvokerRequest
from bulwark.store.idempotency import Idempotency
from bulwark_dev.local.dynamodb_local import local_wire_client
from bulwark_dev.local.stack import LocalStack


def _creds(stack: LocalStack, function: str) -> CredentialSource:
    assert stack.aws is not None
    env = stack.aws.credentials_for(function)
    frozen = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return CredentialSource(lambda: frozen)


def _kms(stack: LocalStack, function: str) -> KmsClient:
    assert stack.aws is not None
    return KmsClient(
        target_prefix="TrentService",
        json_version="1.1",
        service="kms",
        endpoint=Endpoint.parse(stack.aws.url),
        region="us-east-1",
        credentials=_creds(stack, function),
        connect_timeout=1.0,
        read_timeout=5.0,
        max_attempts=1,
    )


def _request() -> InvokerRequest:
    return InvokerRequest(
        request_id=str(uuid.uuid4()),
        principal="key:bench",
        role="developer",
        model="demo-echo",
        route="chat",
        payload='{"model":"demo-echo","messages":[{"role":"user","content":"hello"}]}',
        deadline_epoch_ms=int((time.time() + 25) * 1000),
    )


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as state:
        stack = LocalStack(project_root=ROOT, port=0, state_dir=Path(state), progress=None, log_stream=io.StringIO())
        stack.start()
        try:
            assert stack.aws is not None and stack.template is not None
            key_id = stack.template.functions["InvokerFunction"].environment["BULWARK_INVOKER_MAC_KEY"]
            keys_table = stack.table_names["KeysTable"]
            idempotency_table = stack.table_names["IdempotencyTable"]
            signer, verifier = _kms(stack, "ValidatorFunction"), _kms(stack, "InvokerFunction")
            via_endpoint = dynamodb_at(stack.aws.url, credentials=_creds(stack, "AuthorizerFunction"))
            direct = local_wire_client(stack.dynamodb_endpoint)  # the stack's own credentials: its tables
            invoker_ddb = dynamodb_at(stack.aws.url, credentials=_creds(stack, "InvokerFunction"))
            claims = Idempotency(idempotency_table, lambda: invoker_ddb)
            get = {"TableName": keys_table, "Key": {"pk": {"S": "key#bench"}}, "ConsistentRead": True}
            sign = MacSigner(lambda: signer, key_id).sign
            trust = MacVerifier(lambda: verifier, key_id, claims.claim_once)
            pending: list[InvokerRequest] = []

            def generate() -> None:
                pending.append(sign(_request()))

            def verify_and_claim() -> None:
                trust.verify(pending.pop())

            samples: dict[str, list[float]] = {"get_direct": [], "get_endpoint": [], "generate": [], "verify": []}
            for _ in range(20):  # warm every connection pool
                generate()
                verify_and_claim()
                via_endpoint.get_item(**get)
                direct.get_item(**get)
            for _ in range(n):
                samples["get_direct"].append(_timed(lambda: direct.get_item(**get)))
                samples["get_endpoint"].append(_timed(lambda: via_endpoint.get_item(**get)))
                samples["generate"].append(_timed(generate))
                samples["verify"].append(_timed(verify_and_claim))
        finally:
            stack.stop()
    rows = [
        (label, f"{pct(samples[k], 50):.2f}", f"{pct(samples[k], 99):.2f}")
        for k, label in (
            ("get_direct", "DynamoDB GetItem, straight to DynamoDB Local (baseline)"),
            ("get_endpoint", "DynamoDB GetItem through the IAM endpoint"),
            ("generate", "validator: kms:GenerateMac"),
            ("verify", "invoker: kms:VerifyMac, then the replay claim (PutItem)"),
        )
    ]
    say(table(["call", "p50 ms", "p99 ms"], rows))
    added = pct(samples["generate"], 50) + pct(samples["verify"], 50)
    hop = pct(samples["get_endpoint"], 50) - pct(samples["get_direct"], 50)
    ratio = added / pct(samples["get_direct"], 50)
    say(f"MAC added per request (p50, local): {added:.2f} ms = {ratio:.1f}x one direct GetItem")
    say(f"IAM endpoint hop per AWS call (p50, local): {hop:.2f} ms")


if __name__ == "__main__":
    main()
