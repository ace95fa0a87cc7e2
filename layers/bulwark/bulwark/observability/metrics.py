"""EMF metrics: the function's Metrics, and counts broken down by bounded dimensions (what the alarms watch).

Every EMF document names the request that wrote it: the logger's `function_request_id` and `correlation_id` (the API
Gateway request id) ride along as EMF metadata, under the same keys as the log lines, so one query on either id finds
a request's log lines and its metric lines alike.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from bulwark.observability.logs import redact

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.types import CloudWatchEMFOutput

REQUEST_ID_KEYS = ("function_request_id", "correlation_id")


class RequestEMF(AmazonCloudWatchEMFProvider):
    """The EMF provider whose every document carries the ids the logger holds for the current invocation."""

    def __init__(self, logger: Logger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logger = logger

    def request_ids(self) -> dict[str, str]:
        keys = self.logger.get_current_keys()
        return {k: str(keys[k]) for k in REQUEST_ID_KEYS if keys.get(k)}

    def serialize_metric_set(
        self,
        metrics: dict[str, Any] | None = None,
        dimensions: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CloudWatchEMFOutput:
        # Every flush path (log_metrics, the 100-metric auto-flush, count's blobs) serializes here.
        ids = {**(self.metadata_set if metadata is None else metadata), **self.request_ids()}
        return super().serialize_metric_set(metrics=metrics, dimensions=dimensions, metadata=ids)

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        # An invocation that counted nothing writes nothing: Powertools' "no metrics" warning is a stderr line that no
        # request id can be attached to.
        if not self.metric_set and not raise_on_empty_metrics:
            self.clear_metrics()
            return
        super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)


def make_metrics(logger: Logger) -> Metrics:
    """The function's Metrics; `logger` is the function's Logger, whose request ids every EMF document carries."""
    shared = Metrics()  # Powertools shares the metric, dimension and metadata sets between a function's Metrics
    return Metrics(
        provider=RequestEMF(
            logger,
            namespace=shared.namespace,
            service=shared.service,
            metric_set=shared.metric_set,
            dimension_set=shared.dimension_set,
            metadata_set=shared.metadata_set,
            default_dimensions=shared.default_dimensions,
        )
    )


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
    provider = getattr(metrics, "provider", None)
    if not isinstance(provider, RequestEMF):
        raise TypeError("count() needs the function's Metrics from make_metrics(logger)")
    blob = RequestEMF(provider.logger, namespace=namespace, service=service)
    blob.add_metric(name=name, unit=unit, value=value)
    blob.add_dimension(name="service", value=str(service))
    blob.add_dimensions(service=str(service), **{k: _bounded(v) for k, v in dims.items()})
    blob.flush_metrics()
