"""Key lifecycle used by the CLI and the scheduled janitor: create, rotate, revoke, and the expiry sweep."""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any

from bulwark.auth import keys as keyfmt
from bulwark.auth.pepper import Pepper
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeyExists, KeyRecord, KeysTable, LimitOverrides, SecretHash

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
EXPIRY_WARNING_SECONDS = 7 * 86_400


def parse_duration(text: str) -> int:
    """'90d', '24h', '30m', '45s', '2w' → seconds."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"'{text}' is not a duration like 90d, 24h, 30m or 45s")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class KeyAdmin:
    keys: KeysTable
    counters: CountersTable
    pepper: Pepper

    def create(
        self,
        *,
        name: str,
        role: str,
        expires_in: int | None = None,
        allow_cidrs: tuple[str, ...] = (),
        tenant: str | None = None,
        canary: bool = False,
        limits: LimitOverrides | None = None,
        now: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key; the returned string is the only time the secret exists outside the caller's hands."""
        now = now if now is not None else int(time.time())
        cidrs = tuple(str(ipaddress.ip_network(c, strict=False)) for c in allow_cidrs)
        version, pepper = self.pepper.current()
        for _ in range(5):
            api_key, parsed = keyfmt.new_api_key()
            record = KeyRecord(
                key_id=parsed.key_id,
                name=name,
                role=role,
                tenant=tenant,
                canary=canary,
                created_at=now,
                expires_at=now + expires_in if expires_in else None,
                hashes=(SecretHash(hash=keyfmt.hash_secret(pepper, parsed), pepper_version=version),),
                allow_cidrs=cidrs,
                limits=limits or LimitOverrides(),
            )
            try:
                self.keys.create(record)
            except KeyExists:
                continue  # a 12-character id collided; draw again
            return api_key, record
        raise RuntimeError("could not allocate a key id")

    def rotate(self, key_id: str, grace_seconds: int, now: int | None = None) -> tuple[str, KeyRecord]:
        """A new secret under the same key id, hashed with the current pepper version; the old one keeps working for
        `grace_seconds` (under the version it was made with)."""
        now = now if now is not None else int(time.time())
        api_key, parsed = keyfmt.new_api_key(key_id)
        version, pepper = self.pepper.current()
        new_hash = SecretHash(hash=keyfmt.hash_secret(pepper, parsed), pepper_version=version)
        record = self.keys.rotate(key_id, new_hash, now + grace_seconds, now)
        return api_key, record

    def pepper_versions_in_use(self) -> dict[int, list[str]]:
        """Pepper version -> ids of the keys with a live hash under it: a version may be retired once unused."""
        now = int(time.time())
        used: dict[int, list[str]] = {}
        for record in self.keys.list():
            if record.status == "revoked":
                continue
            for h in record.hashes:
                if h.not_after is None or h.not_after > now:
                    used.setdefault(h.pepper_version, []).append(record.key_id)
        return {v: sorted(set(ids)) for v, ids in sorted(used.items())}

    def revoke(self, key_id: str, now: int | None = None) -> KeyRecord:
        now = now if now is not None else int(time.time())
        record = self.keys.revoke(key_id, now)
        # Admission checks this mark in the same write that charges the limits: model calls stop at once.
        self.counters.mark_revoked(f"key:{key_id}")
        return record

    def sweep_expiry(self, now: int | None = None) -> dict[str, Any]:
        """Disable keys past their expiry; report keys that expire within 7 days (the janitor logs and counts them)."""
        now = now if now is not None else int(time.time())
        disabled: list[str] = []
        expiring: list[dict[str, Any]] = []
        for record in self.keys.list():
            if record.status != "active" or record.expires_at is None:
                continue
            if record.expires_at <= now:
                self.keys.disable_expired(record.key_id, now)
                disabled.append(record.key_id)
            elif record.expires_at - now <= EXPIRY_WARNING_SECONDS and (
                record.expiry_warned_at is None or now - record.expiry_warned_at >= 86_400
            ):
                # Once a day per key, not on every hourly run: a warning that repeats hourly gets ignored.
                expiring.append(
                    {
                        "key_id": record.key_id,
                        "name": record.name,
                        "expires_in_hours": round((record.expires_at - now) / 3600, 1),
                    }
                )
                self.keys.mark_expiry_warned(record.key_id, now)
        return {"disabled": disabled, "expiring_soon": expiring}
