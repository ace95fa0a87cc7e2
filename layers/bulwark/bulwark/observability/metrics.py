"""EMF metrics: the function's Metrics, and counts broken down by bounded dimensions (what the alarms watch)."""

from __future__ import annotations

import re

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from bulwark.observability.logs import redact


def make_metrics() -> Metrics:
    return Metrics()


# ------------------------------------------------------------------------------------------------ dimensioned metrics
_DIM_VALUE = re.compile(r"[a-z0-9_:.-]{1,48}")


def _bounded(value: str) -> str:
    value = str(value).strip().lower()
    return value if _DIM_VALUE.fullmatch(value) and redact(value) == value else "other"


def count(metrics: Metrics, name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count, **dims: str) -> None:
    """Emit `name` for the service (what the alarms watch) and, with `dims`, also broken down by them.

    One EMF document carries both dimension sets, `[service]` and `[service, <dims>]`, so the value is counted once
    in each series. Dimension values are bounded codes (reason, limit, kind); never a key id or anything per caller.
    """
    namespace = getattr(metrics, "namespace", None)
    service = getattr(metrics, "service", None)
    if not dims or not namespace or not service:
        metrics.add_metric(name=name, unit=unit, value=value)
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics

    blob = EphemeralMetrics(namespace=namespace, service=service)
    blob.add_metric(name=name, unit=unit, value=value)
    blob.add_dimension(name="service", value=str(service))
    blob.add_dimensions(service=str(service), **{k: _bounded(v) for k, v in dims.items()})
    blob.flush_metrics()
