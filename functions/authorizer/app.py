"""Lambda REQUEST authorizer: API keys and OAuth 2.0 JWTs. Thin: the decision lives in bulwark.auth.decision."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from bulwark.api.runtime import settle_after_init
from bulwark.observability.logs import make_logger
from bulwark.observability.metrics import make_metrics
from bulwark.observability.tracing import make_tracer
from bulwark.services import authorizer_service

logger = make_logger()
metrics = make_metrics(logger)  # every EMF document carries the request ids the logger holds
tracer = make_tracer()
service = authorizer_service.build(logger, metrics)  # clients and caches live as long as the container
settle_after_init()  # init is done: set what it made aside from the cycle collector


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return service.handle(event)
