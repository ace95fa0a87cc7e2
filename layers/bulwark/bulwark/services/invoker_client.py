"""The validator's side of the validator → invoker hop: a typed message over Lambda Invoke.

The invoker answers with data, never by raising, so the validator can re-raise the exact contract error
(502/503/504 with Retry-After) without parsing text.
"""

import json
from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from bulwark.aws.wire import AwsError, AwsServiceError
from bulwark.errors import ERROR_CLASSES, BulwarkError, RateLimited, UpstreamError


class InvokerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    request_id: str
    principal: str
    role: str
    model: str
    route: Literal["chat", "invoke"]
    payload: str  # the validator's canonical JSON of the validated request, never the raw body
    stream: bool = False
    # "stream": answered over InvokeWithResponseStream as hop records (bulwark.streaming.hop), as the model writes.
    transport: Literal["buffered", "stream"] = "buffered"
    include_usage: bool = False
    output_pii: Literal["off", "flag", "redact"] = "redact"
    deadline_epoch_ms: int
    idempotency_key: str | None = None
    canary: str | None = (
        None  # the system-prompt canary of this request (bulwark.guardrails.canary), if the role has it
    )
    # KMS HMAC over every other field (bulwark.auth.invoker_trust): proves the validator sent this exact request.
    mac: str | None = None


class InvokerError(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    error_class: str
    message: str
    code: str
    retry_after: int | None = None


class InvokerUsage(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class InvokerResponse(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    ok: bool
    body: str = ""  # JSON text, or the whole SSE stream for stream=true
    content_type: str = "application/json"
    usage: InvokerUsage = InvokerUsage()
    output_hits: list[str] = []
    error: InvokerError | None = None
    upstream_ms: float = 0.0
    replayed: bool = False

    def raise_for_error(self) -> None:
        if self.ok:
            return
        err = self.error
        cls = ERROR_CLASSES.get(err.error_class, UpstreamError) if err else UpstreamError
        kwargs: dict[str, Any] = {"code": err.code} if err else {}
        if err and err.retry_after is not None and cls.status in (429, 503):
            kwargs["retry_after"] = err.retry_after
        elif cls.status in (429, 503):
            kwargs["retry_after"] = 1
        raise cls(err.message if err else None, **kwargs)

    @classmethod
    def from_error(cls, exc: BulwarkError, *, usage: InvokerUsage | None = None) -> Self:
        return cls(
            ok=False,
            error=InvokerError(
                error_class=type(exc).__name__,
                message=exc.message,
                code=exc.code,
                retry_after=getattr(exc, "retry_after", None),
            ),
            usage=usage or InvokerUsage(),
        )


class InvokerClient:
    def __init__(
        self,
        lambda_client: Any,
        function_name: str,
        sign: Callable[[InvokerRequest], InvokerRequest] | None = None,
        stream_client: Any | None = None,
    ) -> None:
        self._lambda = lambda_client
        self._function = function_name
        self._sign = sign  # bulwark.auth.invoker_trust.MacSigner.sign: the invoker refuses unsigned requests
        self._stream_client = stream_client

    @property
    def streams(self) -> bool:
        return self._stream_client is not None

    def invoke_stream(self, request: InvokerRequest) -> Any:
        """The invoker's response stream (an iterable of bytes with close()); UpstreamError if it cannot start."""
        if self._stream_client is None:
            raise UpstreamError()
        if self._sign is not None:
            request = self._sign(request)
        try:
            return self._stream_client.invoke_with_response_stream(
                self._function, request.model_dump_json().encode("utf-8")
            )
        except AwsServiceError as exc:
            if exc.code == "TooManyRequestsException":
                raise _in_flight() from exc  # as for Invoke: retry shortly, the reservation is given back
            raise UpstreamError() from exc
        except AwsError as exc:
            raise UpstreamError() from exc

    def invoke(self, request: InvokerRequest) -> InvokerResponse:
        if self._sign is not None:
            request = self._sign(request)
        try:
            resp = self._lambda.invoke(
                FunctionName=self._function,
                InvocationType="RequestResponse",
                Payload=request.model_dump_json().encode("utf-8"),
            )
            raw = resp["Payload"].read()
        except AwsServiceError as exc:
            if exc.code == "TooManyRequestsException":
                # Every invoker environment is busy (its reserved concurrency caps model calls in flight). Not an
                # upstream failure: the caller is told to retry shortly, and its reservation is given back.
                raise _in_flight() from exc
            raise UpstreamError() from exc
        except AwsError as exc:
            raise UpstreamError() from exc
        if resp.get("FunctionError"):
            raise UpstreamError()
        try:
            return InvokerResponse.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise UpstreamError() from exc


def _in_flight() -> RateLimited:
    return RateLimited(
        "Too many model calls are in flight. Retry after the Retry-After delay.",
        code="concurrency_exceeded",
        retry_after=1,
    )
