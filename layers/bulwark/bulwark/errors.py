"""The one exception tree of Bulwark, mapped once to the contract's HTTP error shape.

Every refusal a client can see is a `BulwarkError` subclass carrying status, type and code. Handlers catch the base
class and call `to_response_body()`; nothing maps errors by matching message text. Messages are written for humans,
name the field or the limit at fault, and never contain the client's input, a secret or an internal name.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BulwarkError(Exception):
    """Base of every error a client may see. Subclasses fix status, type and a default code."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class AuthenticationError(BulwarkError):
    """401. One answer for missing, malformed, unknown and wrong credentials: no oracle."""

    status = 401
    error_type = "authentication_error"
    default_code = "invalid_credentials"
    default_message = "The credential is missing, malformed or not valid."

    def __init__(self, message: str | None = None, *, code: str | None = None, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="bulwark"')


class ExpiredCredentials(AuthenticationError):
    default_code = "expired_credentials"
    default_message = "The API key has expired. Create or rotate a key."


class RevokedCredentials(AuthenticationError):
    default_code = "revoked_credentials"
    default_message = "The API key has been revoked."


class PermissionDenied(BulwarkError):
    """403. A model that does not exist answers the same as one the caller may not use."""

    status = 403
    error_type = "permission_error"
    default_code = "model_not_allowed"
    default_message = "The caller is not allowed to use this model."


class IpNotAllowed(PermissionDenied):
    default_code = "ip_not_allowed"
    default_message = "Requests from this source address are not allowed."


class RouteNotAllowed(PermissionDenied):
    default_code = "route_not_allowed"
    default_message = "The caller's role may not use this route."


class RoleNotAllowed(PermissionDenied):
    default_code = "role_not_allowed"
    default_message = "The caller's role is not configured."


class CredentialNotAllowed(PermissionDenied):
    """The risk policy asks for a stronger credential (an OAuth 2.0 token) than the API key presented."""

    default_code = "credential_not_allowed"
    default_message = "API keys are not accepted for this role at the current risk level; use an OAuth 2.0 token."


class InvalidRequest(BulwarkError):
    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"
    default_message = "The request is not valid."


class InvalidJson(InvalidRequest):
    default_code = "invalid_json"
    default_message = "The request body is not valid JSON."


class UnknownParameter(InvalidRequest):
    default_code = "unknown_parameter"
    default_message = "The request contains a parameter that is not supported."


class ContentPolicyViolation(InvalidRequest):
    default_code = "content_policy_violation"
    default_message = "The request was refused by the content policy."


class RequestTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"
    default_message = "The request body is larger than the configured limit."


class UnsupportedMediaType(InvalidRequest):
    status = 415
    default_code = "unsupported_media_type"
    default_message = "The request body must be sent as application/json."


class IdempotencyConflict(InvalidRequest):
    status = 409
    default_code = "idempotency_key_in_use"
    default_message = "A request with this Idempotency-Key is still in progress. Retry shortly."


class NotFound(InvalidRequest):
    status = 404
    default_code = "not_found"
    default_message = "No such route."


class MethodNotAllowed(InvalidRequest):
    status = 405
    default_code = "method_not_allowed"
    default_message = "This method is not allowed on this route."


class RateLimited(BulwarkError):
    """429. Always carries Retry-After (seconds, never earlier than the real reset)."""

    status = 429
    error_type = "rate_limit_error"
    default_code = "requests_per_minute_exceeded"
    default_message = "A rate limit was reached."

    def __init__(self, message: str | None = None, *, retry_after: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = max(1, int(retry_after))
        self.headers["Retry-After"] = str(self.retry_after)


class TooManyFailedAttempts(RateLimited):
    default_code = "too_many_failed_attempts"
    default_message = "Too many failed credential attempts from this address. Wait for the cool-down."


class UpstreamError(BulwarkError):
    status = 502
    error_type = "upstream_error"
    default_code = "upstream_error"
    default_message = "The model upstream failed to answer."


class UpstreamTimeout(UpstreamError):
    status = 504
    default_code = "upstream_timeout"
    default_message = "The model upstream did not answer in time."


class ServiceUnavailable(BulwarkError):
    """503. Always carries Retry-After."""

    status = 503
    error_type = "service_unavailable"
    default_code = "store_unavailable"
    default_message = "A dependency is unavailable. Retry later."

    def __init__(self, message: str | None = None, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = max(1, int(retry_after))
        self.headers["Retry-After"] = str(self.retry_after)


class StoreUnavailable(ServiceUnavailable):
    default_code = "store_unavailable"
    default_message = "The request could not be checked against its limits right now. Retry later."


class JwksUnavailable(ServiceUnavailable):
    default_code = "jwks_unavailable"
    default_message = "The identity provider's signing keys cannot be fetched right now. Retry later."


class UpstreamCircuitOpen(ServiceUnavailable):
    default_code = "upstream_circuit_open"
    default_message = "The model upstream is failing; requests are paused briefly. Retry later."


class InternalError(BulwarkError):
    """500. Only for bugs; never carries details."""


ERROR_CLASSES: dict[str, type[BulwarkError]] = {
    cls.__name__: cls
    for cls in (
        BulwarkError,
        AuthenticationError,
        ExpiredCredentials,
        RevokedCredentials,
        PermissionDenied,
        IpNotAllowed,
        RouteNotAllowed,
        RoleNotAllowed,
        CredentialNotAllowed,
        InvalidRequest,
        InvalidJson,
        UnknownParameter,
        ContentPolicyViolation,
        RequestTooLarge,
        UnsupportedMediaType,
        IdempotencyConflict,
        NotFound,
        MethodNotAllowed,
        RateLimited,
        TooManyFailedAttempts,
        UpstreamError,
        UpstreamTimeout,
        ServiceUnavailable,
        StoreUnavailable,
        JwksUnavailable,
        UpstreamCircuitOpen,
        InternalError,
    )
}
