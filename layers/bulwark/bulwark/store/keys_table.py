"""The keys table: API key records (hashed secrets only), their lifecycle and last-used time."""

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bulwark.errors import StoreUnavailable
from bulwark.store.dynamo import ConditionFailed, from_item, store_call, to_attr, to_item

KeyStatus = Literal["active", "revoked", "disabled"]
_PK = "key#"


class SecretHash(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)
    hash: str
    not_after: int | None = Field(default=None, description="Grace end after a rotation (epoch seconds).")
    # Hashes written before the pepper was versioned carry no version: they were made with version 1.
    pepper_version: int = Field(default=1, ge=1, description="Version of the key-hashing secret that made the hash.")


class LimitOverrides(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    daily_tokens: int | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)
    budget_day_micro_usd: int | None = Field(default=None, gt=0, description="Spend cap per UTC day, micro-dollars.")
    budget_month_micro_usd: int | None = Field(default=None, gt=0, description="Spend cap per UTC month.")


class KeyRecord(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    key_id: str
    name: str
    role: str
    tenant: str | None = None
    status: KeyStatus = "active"
    canary: bool = False
    created_at: int
    expires_at: int | None = None
    hashes: tuple[SecretHash, ...] = ()
    allow_cidrs: tuple[str, ...] = ()
    limits: LimitOverrides = LimitOverrides()
    last_used_at: int | None = None
    rotated_at: int | None = None
    revoked_at: int | None = None
    expiry_warned_at: int | None = None
    networks: tuple[str, ...] = Field(default=(), description="Networks (/24, /48) the key was recently used from.")

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def public_view(self) -> dict[str, Any]:
        """What the CLI may show: everything but the hashes."""
        data = self.model_dump(exclude={"hashes"})
        data["secrets"] = [{"not_after": h.not_after, "pepper_version": h.pepper_version} for h in self.hashes]
        return data


class KeyExists(Exception):
    pass


class KeyNotFound(Exception):
    pass


class KeysTable:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def get(self, key_id: str) -> KeyRecord | None:
        """One strongly consistent read: a revocation is seen by the next uncached check."""
        with store_call():
            resp = self._ddb.get_item(TableName=self._table, Key={"pk": {"S": _PK + key_id}}, ConsistentRead=True)
        item = resp.get("Item")
        return _record(item) if item else None

    def get_with(self, key_id: str, table: str, key: dict[str, Any]) -> tuple[KeyRecord | None, dict[str, Any] | None]:
        """The key record and one item of another table (the caller's module owns its meaning), in ONE
        BatchGetItem call: the authorizer's single store read per uncached check."""
        request = {
            self._table: {"Keys": [{"pk": {"S": _PK + key_id}}], "ConsistentRead": True},
            table: {"Keys": [key], "ConsistentRead": True},
        }
        found: dict[str, list[dict[str, Any]]] = {}
        for _ in range(3):  # unprocessed keys are retried (throttling); anything left fails closed
            with store_call():
                resp = self._ddb.batch_get_item(RequestItems=request)
            for name, items in resp.get("Responses", {}).items():
                found.setdefault(name, []).extend(items)
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise StoreUnavailable()
        keys = found.get(self._table, [])
        others = found.get(table, [])
        return (_record(keys[0]) if keys else None), (from_item(others[0]) if others else None)

    def create(self, record: KeyRecord) -> None:
        data = {"pk": _PK + record.key_id, **record.model_dump(mode="json")}
        try:
            with store_call():
                self._ddb.put_item(
                    TableName=self._table, Item=to_item(data), ConditionExpression="attribute_not_exists(pk)"
                )
        except ConditionFailed:
            raise KeyExists(record.key_id) from None

    def list(self) -> list[KeyRecord]:
        out: list[KeyRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": {"S": _PK}},
        }
        while True:
            with store_call():
                resp = self._ddb.scan(**kwargs)
            out.extend(_record(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return sorted(out, key=lambda r: r.created_at)
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _update(
        self, key_id: str, expr: str, values: dict[str, Any], condition: str = "attribute_exists(pk)"
    ) -> KeyRecord:
        try:
            with store_call():
                resp = self._ddb.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": _PK + key_id}},
                    UpdateExpression=expr,
                    ConditionExpression=condition,
                    **({"ExpressionAttributeNames": {"#s": "status"}} if "#s" in expr + condition else {}),
                    ExpressionAttributeValues={k: to_attr(v) for k, v in values.items()},
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailed:
            raise KeyNotFound(key_id) from None
        return _record(resp["Attributes"])

    def revoke(self, key_id: str, now: int) -> KeyRecord:
        return self._update(key_id, "SET #s = :r, revoked_at = :now", {":r": "revoked", ":now": now})

    def disable_expired(self, key_id: str, now: int) -> KeyRecord:
        return self._update(
            key_id,
            "SET #s = :d",
            {":d": "disabled", ":a": "active", ":now": now},
            condition="attribute_exists(pk) AND #s = :a AND expires_at <= :now",
        )

    def rotate(self, key_id: str, new_hash: SecretHash, grace_until: int, now: int) -> KeyRecord:
        """Old secrets keep working until grace_until, under the same key id; older grace entries are dropped."""
        current = self.get(key_id)
        if current is None or current.status != "active":
            raise KeyNotFound(key_id)
        kept = [
            h.model_copy(update={"not_after": min(grace_until, h.not_after or grace_until)}) for h in current.hashes
        ]
        kept = [h for h in kept if h.not_after is None or h.not_after > now]
        hashes = [new_hash, *kept][:3]
        return self._update(
            key_id,
            "SET hashes = :h, rotated_at = :now",
            {":h": [h.model_dump() for h in hashes], ":now": now, ":a": "active"},
            condition="attribute_exists(pk) AND #s = :a",
        )

    def mark_expiry_warned(self, key_id: str, now: int) -> None:
        self._update(key_id, "SET expiry_warned_at = :now", {":now": now})

    def touch_last_used(
        self, key_id: str, now: int, min_interval: int = 300, networks: tuple[str, ...] | None = None
    ) -> None:
        """Written sparingly: at most once per min_interval per key (or when a new network is seen)."""
        update = "SET last_used_at = :now"
        values: dict[str, Any] = {":now": {"N": str(now)}}
        condition = "attribute_exists(pk)"
        if networks is not None:
            update += ", networks = :nets"
            values[":nets"] = to_attr(list(networks))
        else:
            condition += " AND (attribute_not_exists(last_used_at) OR last_used_at < :old)"
            values[":old"] = {"N": str(now - min_interval)}
        try:
            with store_call():
                self._ddb.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": _PK + key_id}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
        except ConditionFailed:
            return


def _record(item: dict[str, Any]) -> KeyRecord:
    data = from_item(item)
    data.pop("pk", None)
    return KeyRecord.model_validate(data)


def now_s() -> int:
    return int(time.time())
