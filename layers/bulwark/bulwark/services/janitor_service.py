"""The scheduled janitor: disables expired keys and warns (log + metric) about keys expiring within 7 days."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from bulwark.auth.key_admin import KeyAdmin
from bulwark.auth.pepper import Pepper
from bulwark.aws import clients as aws
from bulwark.settings import Settings, settings
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeysTable


class JanitorService:
    def __init__(self, admin: KeyAdmin, logger: Logger, metrics: Metrics) -> None:
        self._admin = admin
        self._log = logger
        self._metrics = metrics

    def handle(self, _event: dict[str, Any]) -> dict[str, Any]:
        report = self._admin.sweep_expiry()
        for key_id in report["disabled"]:
            self._log.warning("expired key disabled", extra={"key_id": key_id})
        for item in report["expiring_soon"]:
            # Nested: a key's "name" as a top-level extra would collide with LogRecord.name and raise KeyError.
            self._log.warning("key expires within 7 days", extra={"key": item})
        self._metrics.add_metric(name="KeysDisabledExpired", unit=MetricUnit.Count, value=len(report["disabled"]))
        self._metrics.add_metric(name="KeysExpiringSoon", unit=MetricUnit.Count, value=len(report["expiring_soon"]))
        return {"disabled": len(report["disabled"]), "expiring_soon": len(report["expiring_soon"])}


def build(logger: Logger, metrics: Metrics, cfg: Settings | None = None) -> JanitorService:
    cfg = cfg or settings()
    ddb = aws.dynamodb()
    admin = KeyAdmin(KeysTable(ddb, cfg.keys_table), CountersTable(ddb, cfg.counters_table), Pepper(cfg))
    return JanitorService(admin, logger, metrics)
