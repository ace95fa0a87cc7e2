"""Client Idempotency-Key support for the invoker, on DynamoDB through the lean client.

A retried request with the same key (per caller) returns the first successful result instead of calling and billing
the model twice. The key is scoped to the caller, and bound to a hash of the canonical payload: reusing a key for a
different request is refused. A concurrent duplicate waits for nothing: it is refused while the first is in flight.
Failures are not stored, so a retry after an upstream error really retries.

One record per (caller, key), its id a SHA-256 of both (the key is the client's text: it is never stored as such):
1. a conditional put claims it, IN_PROGRESS until the request's deadline, when no live record exists;
2. the model is called;
3. a success is written over the claim as COMPLETED (kept for an hour, TTL); a failure, an error or an answer too big
   for one item deletes the claim.
A refused claim returns the record as it was (ReturnValuesOnConditionCheckFailure), so a replay costs one write.
A store failure fails closed (503): the model is not called without the record that prevents a second call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from bulwark.errors import IdempotencyConflict, InvalidRequest, StoreUnavailable
from bulwark.store.dynamo import ConditionFailed, from_item, store_call

IDEMPOTENCY_WINDOW_SECONDS = 3600
# A DynamoDB item holds at most 400 KB; a bigger answer is returned but not stored (a retry calls the model again).
MAX_STORED_CHARS = 350_000
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"


class Idempotency:
    def __init__(self, table_name: str, client: Callable[[], Any], clock: Callable[[], float] = time.time) -> None:
        self._table = table_name
        self._client = client  # the lean DynamoDB client, made at the first request that carries a key
        self._clock = clock

    def run(
        self, principal: str, key: str, payload: str, call: Callable[[], dict[str, Any]], deadline_ms: int
    ) -> dict[str, Any]:
        """The stored result for (principal, key), or call() once and store it if it succeeded (`ok`).

        `deadline_ms` (epoch) is when the claim lapses if this invocation dies before settling it."""
        ddb = self._client()
        record_id = hashlib.sha256(f"{principal}\x00{key}".encode()).hexdigest()
        digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        now = self._clock()
        key_attr = {"id": {"S": record_id}}
        try:
            with store_call():
                ddb.put_item(
                    TableName=self._table,
                    Item={
                        **key_attr,
                        "status": {"S": IN_PROGRESS},
                        "validation": {"S": digest},
                        "expiration": {"N": str(int(now) + IDEMPOTENCY_WINDOW_SECONDS)},
                        "in_progress_expiration": {"N": str(max(deadline_ms, int(now * 1000)))},
                    },
                    # Free: no record, an expired one (TTL deletion lags), or a claim whose invocation died.
                    ConditionExpression="attribute_not_exists(id) OR expiration < :now"
                    " OR (#status = :in_progress AND in_progress_expiration < :now_ms)",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={
                        ":now": {"N": str(int(now))},
                        ":now_ms": {"N": str(int(now * 1000))},
                        ":in_progress": {"S": IN_PROGRESS},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailed as taken:
            return self._existing(ddb, key_attr, taken.item, digest)

        try:
            result = call()
        except BaseException:
            self._release(ddb, key_attr)  # a retry may try again at once (a claim that cannot be deleted lapses)
            raise
        data = json.dumps(result, separators=(",", ":")) if result.get("ok") else ""
        if not data or len(data) > MAX_STORED_CHARS:
            self._release(ddb, key_attr)  # a failure is not stored; nor is an answer too big for one item
            return result
        with store_call():
            ddb.update_item(
                TableName=self._table,
                Key=key_attr,
                UpdateExpression="SET #status = :completed, #data = :data REMOVE in_progress_expiration",
                ExpressionAttributeNames={"#status": "status", "#data": "data"},
                ExpressionAttributeValues={":completed": {"S": COMPLETED}, ":data": {"S": data}},
            )
        return result

    def claim_once(self, token: str, expires_at: int) -> bool:
        """True the first time ``token`` is claimed, False on any later claim until ``expires_at`` (epoch s): the
        invoker's replay check on signed validator requests (one conditional put). Store failures propagate."""
        ddb = self._client()
        record_id = "once#" + hashlib.sha256(token.encode("utf-8")).hexdigest()
        try:
            with store_call():
                ddb.put_item(
                    TableName=self._table,
                    Item={"id": {"S": record_id}, "expiration": {"N": str(expires_at)}},
                    ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                    ExpressionAttributeValues={":now": {"N": str(int(self._clock()))}},
                )
        except ConditionFailed:
            return False
        return True

    def _release(self, ddb: Any, key_attr: dict[str, Any]) -> None:
        try:
            with store_call():
                ddb.delete_item(TableName=self._table, Key=key_attr)
        except StoreUnavailable:
            pass  # the claim lapses at its deadline instead

    def _existing(self, ddb: Any, key_attr: dict[str, Any], item: dict[str, Any] | None, digest: str) -> dict[str, Any]:
        if item is None:  # an engine that does not return the old item: read it
            with store_call():
                got = ddb.get_item(TableName=self._table, Key=key_attr, ConsistentRead=True).get("Item")
            if got is None:  # settled as a failure and deleted in between: the caller may retry at once
                raise IdempotencyConflict()
            item = from_item(got)
        if item.get("validation") != digest:
            raise InvalidRequest(
                "This Idempotency-Key was already used for a different request.",
                code="idempotency_key_reused",
                param="Idempotency-Key",
            )
        if item.get("status") != COMPLETED:
            raise IdempotencyConflict()
        try:
            stored = json.loads(str(item["data"]))
        except (KeyError, ValueError):
            raise StoreUnavailable() from None  # a record we cannot read is no answer: fail closed
        if not isinstance(stored, dict):
            raise StoreUnavailable()
        return stored
