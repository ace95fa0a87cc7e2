"""Validator: parses, validates and sanitizes each request, admits it against limits, then calls the invoker.

Thin: the work lives in bulwark.services.validator_service. It has no permission to call any model.
"""

from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from bulwark.api.runtime import flush_on_shutdown, settle_after_init
from bulwark.observability.logs import make_logger
from bulwark.observability.metrics import make_metrics
from bulwark.observability.tracing import make_tracer
from bulwark.services import validator_service
from bulwark.settings import settings
from bulwark.streaming.http import integration_stream

logger = make_logger()
metrics = make_metrics(logger)  # every EMF document carries the request ids the logger holds
tracer = make_tracer()
service = validator_service.build(logger, metrics)  # clients and caches live as long as the container
# The API's integration streams (template: ResponseTransferMode): every answer goes out in the streaming format.
STREAMING = settings().stream_responses
flush_on_shutdown(service.shutdown)  # deferred refunds are written before the environment goes away
settle_after_init()  # init is done: set what it made aside from the cycle collector


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | Iterator[bytes]:
    result = service.handle(event)
    if STREAMING:
        return integration_stream(result)
    assert isinstance(result, dict)  # a stream is only ever made when the integration streams
    return result
