"""botocore failures described for the guard, and per-timeout client configs (botocore has no per-call timeout).

botocore's own retries are off (`total_max_attempts: 1`): the guard owns retries, so attempts stay inside the deadline.
"""

from __future__ import annotations

from typing import Any

from bulwark.upstreams.guard import AttemptError, parse_retry_after

# Error codes that mean "try again later", whatever HTTP status (event-stream exceptions carry none).
_RETRYABLE_CODES = {
    "ThrottlingException": 429,
    "throttlingException": 429,
    "TooManyRequestsException": 429,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "serviceUnavailableException": 503,
    "ServiceUnavailable": 503,
    "InternalServerException": 500,
    "internalServerException": 500,
    "InternalFailure": 500,
    "InternalDependencyException": 500,
    "ModelTimeoutException": 408,
}


def aws_failure(exc: BaseException) -> AttemptError:
    """Classify a botocore exception. Only the error code and status are kept, never the service's message."""
    from botocore import exceptions as bx
    from botocore.parsers import ResponseParserError

    if isinstance(exc, bx.ClientError):
        response: dict[str, Any] = getattr(exc, "response", {}) or {}
        code = str(response.get("Error", {}).get("Code", "Unknown"))
        meta = response.get("ResponseMetadata", {}) or {}
        status = meta.get("HTTPStatusCode")
        headers = meta.get("HTTPHeaders", {}) or {}
        if code == "ModelError":  # SageMaker: the container answered with an error of its own
            original = response.get("OriginalStatusCode")
            status = original if isinstance(original, int) else status
        elif code in _RETRYABLE_CODES:
            status = _RETRYABLE_CODES[code] if not isinstance(status, int) or status < 400 else status
        if not isinstance(status, int):
            status = 500 if code.lower().startswith(("internal", "modelstream")) else 400
        retryable = status in (408, 429) or status >= 500
        if code == "modelStreamErrorException":
            retryable = False
        return AttemptError(
            f"aws_{code}",
            status=status,
            retryable=retryable,
            retry_after=parse_retry_after(headers.get("retry-after")),
            trips=retryable or code == "modelStreamErrorException",
        )
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return AttemptError("timeout", retryable=True, timeout=True)
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
        return AttemptError("connect_failed", retryable=True)
    if isinstance(exc, ResponseParserError):
        return AttemptError("malformed_response", retryable=False)
    if isinstance(exc, bx.HTTPClientError):
        return AttemptError("connection_reset", retryable=True)
    return AttemptError(f"aws_{type(exc).__name__}", retryable=False)


def botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    return (BotoCoreError, ClientError, ResponseParserError)


def content_length(response: dict[str, Any]) -> int | None:
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    value = headers.get("content-length")
    return int(value) if isinstance(value, str) and value.isdigit() else None
