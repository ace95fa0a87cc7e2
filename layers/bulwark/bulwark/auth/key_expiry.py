"""Strict key expiry, as the scheduled janitor runs it: disable keys past expiry, warn about keys that expire soon.

Runtime code (the janitor function imports it); `bulwark keys` reaches it through bulwark_dev.key_admin.
"""

from __future__ import annotations

from typing import Any

from bulwark.store.keys_table import KeysTable

EXPIRY_WARNING_SECONDS = 7 * 86_400
# Once a day per key, not on every hourly run: a warning that repeats hourly gets ignored.
WARNING_INTERVAL_SECONDS = 86_400


def sweep_expiry(keys: KeysTable, now: int) -> dict[str, Any]:
    """Disable keys past their expiry; report keys that expire within 7 days (the janitor logs and counts them)."""
    disabled: list[str] = []
    expiring: list[dict[str, Any]] = []
    for record in keys.list():
        if record.status != "active" or record.expires_at is None:
            continue
        if record.expires_at <= now:
            keys.disable_expired(record.key_id, now)
            disabled.append(record.key_id)
        elif record.expires_at - now <= EXPIRY_WARNING_SECONDS and (
            record.expiry_warned_at is None or now - record.expiry_warned_at >= WARNING_INTERVAL_SECONDS
        ):
            expiring.append(
                {
                    "key_id": record.key_id,
                    "name": record.name,
                    "expires_in_hours": round((record.expires_at - now) / 3600, 1),
                }
            )
            keys.mark_expiry_warned(record.key_id, now)
    return {"disabled": disabled, "expiring_soon": expiring}
