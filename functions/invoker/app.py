"""Invoker: the only component allowed to call a model. Invoked only by the validator, never by API Gateway.

Thin: the work lives in bulwark.services.invoker_service.
"""

from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from bulwark.api.runtime import settle_after_init
from bulwark.observability.logs import make_logger
from bulwark.observability.metrics import make_metrics
from bulwark.observability.tracing import make_tracer
from bulwark.services import invoker_service

logger = make_logger()
metrics = make_metrics(logger)  # every EMF document carries the request ids the logger holds
tracer = make_tracer()  # upstream attempts and AWS calls record their own subsegments (bulwark.observability.tracing)
service = invoker_service.build(logger, metrics)  # upstream clients, secrets and circuit breakers per container
settle_after_init()  # init is done: set what it made aside from the cycle collector


@logger.inject_lambda_context(correlation_id_path="request_id")
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | Iterator[bytes]:
    return service.handle(event)  # a streamed chat request: its hop records, as the model writes
