"""An API Gateway (REST, v1 Lambda proxy) emulator for one ``AWS::Serverless::Api`` of the template.

For each request: match a route, run the Lambda REQUEST (or TOKEN) authorizer with the event API Gateway sends, honour
the authorizer result cache, evaluate the returned IAM policy against the method ARN, then call the integration with
the v1 proxy event (authorizer context included) and map its proxy response back to HTTP. Gateway-made errors use the
template's ``GatewayResponses`` when it has them, else the public contract's error shape. Every response carries
``x-request-id``. Limits as on AWS: 10 MB payload (413), 29 s integration timeout (504).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from bulwark.streaming.http import split_metadata
from bulwark_dev.local._http import BodyTooLarge, FastHandler, QuietServer, serve_in_thread
from bulwark_dev.local.lambda_worker import InvokeResult
from bulwark_dev.local.stream_transport import StreamThrottled, send_stream
from bulwark_dev.local.template_model import LOCAL_ACCOUNT, LOCAL_REGION, ApiSpec, AuthorizerSpec, RouteSpec

MAX_PAYLOAD: Final = 10 * 1024 * 1024  # API Gateway's request payload quota
INTEGRATION_TIMEOUT: Final = 29.0  # API Gateway's default (and, for REST APIs, usual maximum) integration timeout
_PROXY_RESPONSE_KEYS: Final = frozenset({"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"})
_HOP_BY_HOP: Final = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive", "date"})

# API Gateway's limits for a streamed response (regional endpoint): 5 minutes without a byte, 15 minutes in all; the
# metadata (status, headers) must come within the first 16 KB.
STREAM_IDLE_TIMEOUT: Final = 300.0
STREAM_MAX_SECONDS: Final = 900.0
STREAM_METADATA_LIMIT: Final = 16 * 1024

# (function logical id, payload, timeout s) -> result; TimeoutError when no answer in time, OSError if unreachable.
Invoke = Callable[[str, bytes, float], InvokeResult]
# (function logical id, payload, idle timeout s) -> the PayloadChunk bytes (iterable, with close()).
InvokeStream = Callable[[str, bytes, float], Any]
AccessLog = Callable[[dict[str, Any]], None]


# ------------------------------------------------------------------------------------------------------------ policy


def _glob(pattern: str) -> re.Pattern[str]:
    # IAM-style wildcards: * any run of characters (including ':' and '/'), ? exactly one character.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _statement_matches(statement: Mapping[str, Any], method_arn: str) -> bool:
    actions = [str(action) for action in _as_list(statement.get("Action"))]
    if not any(_glob(action.lower()).match("execute-api:invoke") for action in actions):
        return False
    return any(_glob(str(resource)).match(method_arn) for resource in _as_list(statement.get("Resource")))


def policy_allows(policy_document: Mapping[str, Any], method_arn: str) -> bool:
    """API Gateway's decision: an explicit Deny wins, else at least one matching Allow is needed."""
    statements = _as_list(policy_document.get("Statement"))
    matching = [s for s in statements if isinstance(s, Mapping) and _statement_matches(s, method_arn)]
    if any(str(s.get("Effect", "")).lower() == "deny" for s in matching):
        return False
    return any(str(s.get("Effect", "")).lower() == "allow" for s in matching)


class AuthorizerResponse(BaseModel):
    """The part of a Lambda authorizer's answer that API Gateway reads; anything else is a configuration error."""

    model_config = ConfigDict(extra="ignore")

    principalId: str  # noqa: N815 - the wire name
    policyDocument: dict[str, Any]  # noqa: N815
    context: dict[str, str | int | float | bool] | None = None
    usageIdentifierKey: str | None = None  # noqa: N815

    def context_strings(self) -> dict[str, str]:
        # REST APIs hand every context value to the integration as a string.
        strings: dict[str, str] = {}
        for key, value in (self.context or {}).items():
            strings[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return strings


# -------------------------------------------------------------------------------------------------------- responses

_DEFAULTS: Final[dict[str, tuple[int, str, str, str]]] = {
    # response type: (status, error type, code, message) in the contract's shape
    "UNAUTHORIZED": (401, "authentication_error", "invalid_credentials", "Missing or invalid credentials."),
    "ACCESS_DENIED": (403, "permission_error", "access_denied", "You are not allowed to call this route."),
    "AUTHORIZER_FAILURE": (500, "service_unavailable", "authorizer_failure", "The authorizer could not decide."),
    "AUTHORIZER_CONFIGURATION_ERROR": (
        500,
        "service_unavailable",
        "authorizer_failure",
        "The authorizer could not decide.",
    ),
    "RESOURCE_NOT_FOUND": (404, "invalid_request_error", "not_found", "No route matches this request."),
    "METHOD_NOT_ALLOWED": (405, "invalid_request_error", "method_not_allowed", "This route does not take that method."),
    "REQUEST_TOO_LARGE": (413, "invalid_request_error", "request_too_large", "The request body is too large."),
    "INTEGRATION_TIMEOUT": (504, "upstream_error", "upstream_timeout", "The request timed out."),
    "INTEGRATION_FAILURE": (502, "api_error", "internal_error", "Internal server error"),
    "DEFAULT_5XX": (502, "api_error", "internal_error", "Internal server error"),
}
_CONTEXT_VARIABLE = re.compile(r"\$\{?context\.([A-Za-z0-9_.]+)\}?")


@dataclass
class _Request:
    request_id: str
    method: str
    raw_path: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    started: float
    route: RouteSpec | None = None
    path_parameters: dict[str, str] | None = None
    authorizer_context: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        found = None
        for key, value in self.headers:
            if key.lower() == lowered:
                found = value
        return found


@dataclass
class GatewayResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stream: Any = None  # a STREAM integration's remaining body (iterable of bytes, with close()): sent chunked


@dataclass
class _CachedDecision:
    expires: float
    response: AuthorizerResponse


class _Routes:
    def __init__(self, routes: tuple[RouteSpec, ...]) -> None:
        compiled = []
        for route in routes:
            segments = route.path.strip("/").split("/") if route.path.strip("/") else []
            pattern = ""
            for segment in segments:
                greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
                param = re.fullmatch(r"\{(\w+)\}", segment)
                if greedy:
                    pattern += f"/(?P<{greedy.group(1)}>.+)"
                elif param:
                    pattern += f"/(?P<{param.group(1)}>[^/]+)"
                else:
                    pattern += "/" + re.escape(segment)
            literal = sum(1 for s in segments if not s.startswith("{"))
            # More literal segments win over parameters, and a greedy {proxy+} loses to everything (as on AWS).
            rank = (-literal, "+}" in route.path, -len(segments))
            compiled.append((rank, re.compile((pattern or "/") + r"\Z"), route))
        self._routes = sorted(compiled, key=lambda item: item[0])

    def match(self, method: str, path: str) -> tuple[RouteSpec | None, dict[str, str] | None, list[str]]:
        allowed: list[str] = []
        for _, pattern, route in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            if route.method in (method, "ANY"):
                return route, (found.groupdict() or None), []
            allowed.append(route.method)
        return None, None, allowed


class ApiGatewayEmulator:
    """Serve one API on ``host:port`` (port 0 picks a free one); call :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        api: ApiSpec,
        invoke: Invoke,
        *,
        function_timeouts: Mapping[str, float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: AccessLog | None = None,
        integration_timeout: float = INTEGRATION_TIMEOUT,
        invoke_stream: InvokeStream | None = None,
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT,
        stream_max_seconds: float = STREAM_MAX_SECONDS,
    ) -> None:
        self.api = api
        self._invoke = invoke
        self._invoke_stream = invoke_stream
        self.stream_idle_timeout = stream_idle_timeout
        self.stream_max_seconds = stream_max_seconds
        self._timeouts = dict(function_timeouts or {})
        self._access_log = access_log
        self._integration_timeout = integration_timeout
        self._routes = _Routes(api.routes)
        self._cache: dict[tuple[str, tuple[str | None, ...]], _CachedDecision] = {}
        self._cache_lock = threading.Lock()
        self._server = QuietServer((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = serve_in_thread(self._server, f"api-gateway-{self.api.logical_id}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------------------ request
    def handle(self, request: _Request) -> GatewayResult:
        route, path_parameters, allowed = self._routes.match(request.method, request.path)
        if route is None:
            if allowed:
                result = self.error(request, "METHOD_NOT_ALLOWED")
                result.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
                return result
            return self.error(request, "RESOURCE_NOT_FOUND")
        request.route = route
        request.path_parameters = path_parameters
        request.log["resourcePath"] = route.path
        if len(request.body) > MAX_PAYLOAD:
            return self.error(request, "REQUEST_TOO_LARGE")
        if route.authorizer is not None:
            denied = self._authorize(request, self.api.authorizers[route.authorizer])
            if denied is not None:
                return denied
        return self._integrate(request, route)

    def method_arn(self, request: _Request) -> str:
        path = request.path.lstrip("/")
        return (
            f"arn:aws:execute-api:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{self.api.api_id}/{self.api.stage_name}/"
            f"{request.method}/{path}"
        )

    def _request_context(self, request: _Request, host: str) -> dict[str, Any]:
        route = request.route
        assert route is not None
        epoch = time.time()
        return {
            "accountId": LOCAL_ACCOUNT,
            "apiId": self.api.api_id,
            "domainName": host,
            "domainPrefix": host.split(".", maxsplit=1)[0].split(":", maxsplit=1)[0],
            "extendedRequestId": request.request_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": request.source_ip,
                "user": None,
                "userAgent": request.header("User-Agent"),
                "userArn": None,
            },
            "path": f"/{self.api.stage_name}{request.path}",
            "protocol": "HTTP/1.1",
            "requestId": request.request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch)),
            "requestTimeEpoch": int(epoch * 1000),
            "resourceId": _resource_id(route.path),
            "resourcePath": route.path,
            "stage": self.api.stage_name,
        }

    def _common_event(self, request: _Request) -> dict[str, Any]:
        route = request.route
        assert route is not None
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for key, value in request.headers:
            headers[key] = value  # the last value wins in the single-value map, as on AWS
            multi_headers.setdefault(key, []).append(value)
        query: dict[str, str] = {}
        multi_query: dict[str, list[str]] = {}
        for key, value in request.query:
            query[key] = value
            multi_query.setdefault(key, []).append(value)
        return {
            "resource": route.path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": request.path_parameters,
            "stageVariables": None,
            "requestContext": self._request_context(request, request.header("Host") or "127.0.0.1"),
        }

    # --------------------------------------------------------------------------------------------------- authorizer
    def _identity_key(self, request: _Request, authorizer: AuthorizerSpec) -> tuple[str | None, ...] | None:
        """The cache key API Gateway builds from the identity sources; None when a configured source is missing."""
        if authorizer.payload_type == "TOKEN":
            token = request.header(authorizer.token_header)
            return (token,) if token else None
        if not authorizer.has_identity_sources:
            return (request.header("Authorization"), request.header("x-api-key"))
        query = dict(request.query)
        values: list[str | None] = [request.header(name) for name in authorizer.identity_headers]
        values += [query.get(name) for name in authorizer.identity_query_strings]
        values += [None for _ in authorizer.identity_stage_variables]  # no stage variables locally
        values += [self._context_value(request, name) for name in authorizer.identity_context]
        return None if any(not value for value in values) else tuple(values)

    def _context_value(self, request: _Request, name: str) -> str | None:
        if name in ("identity.sourceIp", "sourceIp"):
            return request.source_ip
        if name in ("httpMethod",):
            return request.method
        if name in ("resourcePath",) and request.route is not None:
            return request.route.path
        return None

    def _authorize(self, request: _Request, authorizer: AuthorizerSpec) -> GatewayResult | None:
        key = self._identity_key(request, authorizer)
        # API Gateway answers 401 itself, without calling the authorizer, when an identity source is missing.
        if key is None and (authorizer.payload_type == "TOKEN" or authorizer.has_identity_sources):
            request.log["authorizer"] = "missing-identity"
            return self.error(request, "UNAUTHORIZED")
        method_arn = self.method_arn(request)
        ttl = authorizer.reauthorize_every
        cache_key = (authorizer.name, key or ())
        decision: AuthorizerResponse | None = None
        latency_ms = 0
        if ttl > 0:
            with self._cache_lock:
                cached = self._cache.get(cache_key)
                if cached is not None and cached.expires > time.monotonic():
                    decision = cached.response
                    request.log["authorizer"] = "cached"
        if decision is None:
            started = time.perf_counter()
            outcome = self._call_authorizer(request, authorizer, method_arn)
            latency_ms = round((time.perf_counter() - started) * 1000)
            request.log["authorizerLatencyMs"] = latency_ms
            if isinstance(outcome, GatewayResult):
                return outcome
            decision = outcome
            request.log["authorizer"] = "called"
            if ttl > 0:
                with self._cache_lock:
                    self._cache[cache_key] = _CachedDecision(time.monotonic() + ttl, decision)
        request.authorizer_context = {
            "principalId": decision.principalId,
            **decision.context_strings(),
            "integrationLatency": latency_ms,
        }
        # The cached policy is checked against this request's ARN, so an Allow for one route never opens another.
        if not policy_allows(decision.policyDocument, method_arn):
            return self.error(request, "ACCESS_DENIED")
        return None

    def _call_authorizer(
        self, request: _Request, authorizer: AuthorizerSpec, method_arn: str
    ) -> AuthorizerResponse | GatewayResult:
        if authorizer.payload_type == "TOKEN":
            event: dict[str, Any] = {
                "type": "TOKEN",
                "authorizationToken": request.header(authorizer.token_header),
                "methodArn": method_arn,
            }
        else:
            event = {"type": "REQUEST", "methodArn": method_arn, **self._common_event(request)}
        timeout = min(self._timeouts.get(authorizer.function, INTEGRATION_TIMEOUT), INTEGRATION_TIMEOUT)
        try:
            result = self._invoke(authorizer.function, json.dumps(event).encode(), timeout)
        except (TimeoutError, OSError) as exc:
            request.log["authorizerError"] = type(exc).__name__
            return self.error(request, "AUTHORIZER_FAILURE")
        if result.status != 200:  # e.g. 429: Lambda throttled the authorizer; API Gateway fails closed
            request.log["authorizerError"] = result.error_type or f"invoke status {result.status}"
            return self.error(request, "AUTHORIZER_FAILURE")
        if result.function_error:
            try:
                message = json.loads(result.payload).get("errorMessage")
            except (ValueError, AttributeError):
                message = None
            if message == "Unauthorized":  # the documented way for an authorizer to ask for a 401
                request.log["authorizer"] = "unauthorized"
                return self.error(request, "UNAUTHORIZED")
            request.log["authorizerError"] = "function error"
            return self.error(request, "AUTHORIZER_FAILURE")
        try:
            return AuthorizerResponse.model_validate_json(result.payload)
        except ValidationError:
            request.log["authorizerError"] = "malformed response"
            return self.error(request, "AUTHORIZER_FAILURE")

    # -------------------------------------------------------------------------------------------------- integration
    def _integrate(self, request: _Request, route: RouteSpec) -> GatewayResult:
        event = self._common_event(request)
        if not event["queryStringParameters"]:  # the proxy event has null, not {}, for "none"
            event["queryStringParameters"] = None
            event["multiValueQueryStringParameters"] = None
        if request.authorizer_context:
            event["requestContext"]["authorizer"] = request.authorizer_context
        try:
            event["body"] = request.body.decode("utf-8") if request.body else None
            event["isBase64Encoded"] = False
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(request.body).decode()
            event["isBase64Encoded"] = True
        if route.stream and self._invoke_stream is not None:
            return self._integrate_stream(request, route, json.dumps(event).encode())
        started = time.perf_counter()
        try:
            result = self._invoke(route.function, json.dumps(event).encode(), self._integration_timeout)
        except TimeoutError:
            request.log["integrationError"] = "timeout"
            return self.error(request, "INTEGRATION_TIMEOUT")
        except OSError as exc:
            request.log["integrationError"] = type(exc).__name__
            return self.error(request, "DEFAULT_5XX")
        finally:
            request.log["integrationLatencyMs"] = round((time.perf_counter() - started) * 1000, 3)
        if result.status == 429:
            # Lambda throttled the function (its reserved concurrency is in use): API Gateway does not pass the 429
            # on; it answers its INTEGRATION_FAILURE response, 500 unless the API maps it.
            request.log["integrationError"] = result.error_type or "throttled"
            return self.error(request, "INTEGRATION_FAILURE", status=500)
        if result.status != 200 or result.function_error:
            request.log["integrationError"] = "function error"
            return self.error(request, "DEFAULT_5XX")
        mapped = _proxy_response(result.payload)
        if mapped is None:
            request.log["integrationError"] = "malformed proxy response"
            return self.error(request, "DEFAULT_5XX")
        status, headers, body = mapped
        names = {name.lower() for name, _ in headers}
        if "content-type" not in names:
            headers.append(("Content-Type", "application/json"))
        return GatewayResult(status, headers, body)

    def _integrate_stream(self, request: _Request, route: RouteSpec, payload: bytes) -> GatewayResult:
        """ResponseTransferMode STREAM: InvokeWithResponseStream; status and headers from the metadata before the
        eight-NUL delimiter (within the first 16 KB), then the body goes to the client as it arrives."""
        assert self._invoke_stream is not None
        started = time.perf_counter()
        stream: Any = None
        split: tuple[dict[str, Any], bytes] | None = None
        try:
            stream = self._invoke_stream(route.function, payload, self.stream_idle_timeout)
            pieces = iter(stream)
            buffer = b""
            while split is None:
                buffer += next(pieces)
                split = split_metadata(buffer)
                if split is None and len(buffer) > STREAM_METADATA_LIMIT:
                    raise ValueError("no metadata delimiter in the first 16 KB")
        except TimeoutError:
            request.log["integrationError"] = "timeout"
            return self.error(request, "INTEGRATION_TIMEOUT")
        except StreamThrottled:
            # The streaming invoke's own error, as the buffered integration logs Invoke's (see _integrate).
            request.log["integrationError"] = "TooManyRequestsException"
            return self.error(request, "INTEGRATION_FAILURE", status=500)
        except (OSError, ValueError, StopIteration, RuntimeError) as exc:
            request.log["integrationError"] = type(exc).__name__
            return self.error(request, "DEFAULT_5XX")
        finally:
            request.log["integrationLatencyMs"] = round((time.perf_counter() - started) * 1000, 3)
            if split is None and stream is not None:
                stream.close()  # no response to relay: free the function's environment now
        meta, rest = split
        headers = [(str(k), _header_value(v)) for k, v in (meta.get("headers") or {}).items()]
        for name, values in (meta.get("multiValueHeaders") or {}).items():
            headers.extend((str(name), _header_value(v)) for v in values or [])
        if "content-type" not in {name.lower() for name, _ in headers}:
            headers.append(("Content-Type", "application/json"))
        request.log["responseTransferMode"] = "STREAM"

        return GatewayResult(int(meta.get("statusCode", 200)), headers, b"", stream=_StreamBody(rest, pieces, stream))

    # ------------------------------------------------------------------------------------------------------- errors
    def error(self, request: _Request, response_type: str, status: int | None = None) -> GatewayResult:
        default_status, error_type, code, message = _DEFAULTS.get(response_type, _DEFAULTS["DEFAULT_5XX"])
        status = status or default_status
        responses = self.api.gateway_responses
        fallback = "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
        spec = responses.get(response_type) or responses.get(fallback)
        request.log["errorType"] = response_type
        headers: list[tuple[str, str]] = []
        if spec is None:
            body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}}).encode()
            headers.append(("Content-Type", "application/json"))
            if status == 401:
                headers.append(("WWW-Authenticate", "Bearer"))
            return GatewayResult(status, headers, body)
        status = spec.status_code or status
        headers.extend(spec.headers.items())
        template = spec.templates.get("application/json")
        if template is None:
            text = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})
        else:
            text = _render(template, request, response_type, message)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
        return GatewayResult(status, headers, text.encode())


def _render(template: str, request: _Request, response_type: str, message: str) -> str:
    values: dict[str, str] = {
        "requestId": request.request_id,
        "extendedRequestId": request.request_id,
        "httpMethod": request.method,
        "resourcePath": request.route.path if request.route else "",
        "identity.sourceIp": request.source_ip,
        "error.message": message,
        "error.messageString": json.dumps(message),
        "error.responseType": response_type,
    }
    for key, value in request.authorizer_context.items():
        values[f"authorizer.{key}"] = str(value)

    def substitute(match: re.Match[str]) -> str:
        return values.get(match.group(1), "")

    return _CONTEXT_VARIABLE.sub(substitute, template)


def _proxy_response(payload: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Map a Lambda proxy response to (status, headers, body); None when API Gateway would call it malformed."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not set(data) <= _PROXY_RESPONSE_KEYS:
        return None
    status = data.get("statusCode", 200)
    if isinstance(status, bool) or not isinstance(status, int | str) or not str(status).isdigit():
        return None
    status = int(status)
    if not 100 <= status <= 599:
        return None
    headers: list[tuple[str, str]] = []
    single = data.get("headers") or {}
    multi = data.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        return None
    seen: set[str] = set()
    for name, values in multi.items():
        if not isinstance(values, list):
            return None
        if name.lower() in _HOP_BY_HOP:
            continue
        seen.add(name.lower())
        headers.extend((str(name), _header_value(value)) for value in values)
    for name, value in single.items():
        if name.lower() in _HOP_BY_HOP or name.lower() in seen:
            continue
        if isinstance(value, dict | list):
            return None
        headers.append((str(name), _header_value(value)))
    body = data.get("body")
    if body is None:
        raw = b""
    elif not isinstance(body, str):
        return None
    elif data.get("isBase64Encoded") is True:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        raw = body.encode("utf-8")
    return status, headers, raw


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _resource_id(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:6]


class _StreamBody:
    """The rest of a streamed integration response. close() frees the function's stream even if it was never read
    (a generator's cleanup would not run then)."""

    def __init__(self, rest: bytes, pieces: Iterator[bytes], stream: Any) -> None:
        self._rest = rest
        self._pieces = pieces
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        if self._rest:
            yield self._rest
        yield from self._pieces

    def close(self) -> None:
        self._stream.close()


def _make_handler(gateway: ApiGatewayEmulator) -> type[FastHandler]:
    class GatewayHandler(FastHandler):
        def _handle(self) -> None:
            started = time.perf_counter()
            split = urlsplit(self.path)
            request = _Request(
                request_id=str(uuid.uuid4()),
                method=self.command,
                raw_path=self.path,
                path=split.path or "/",
                query=parse_qsl(split.query, keep_blank_values=True),
                headers=list(self.headers.items()),
                body=b"",
                source_ip=self.client_address[0],
                started=started,
            )
            close = False
            try:
                request.body = self.read_body(MAX_PAYLOAD)
                result = gateway.handle(request)
            except BodyTooLarge:
                # The body is left unread, so this connection cannot carry another request.
                result = gateway.error(request, "REQUEST_TOO_LARGE")
                close = True
            except Exception as exc:  # a bug in the emulator must still answer, in the contract's shape
                request.log["emulatorError"] = repr(exc)
                result = gateway.error(request, "DEFAULT_5XX")
            headers = [(k, v) for k, v in result.headers if k.lower() not in ("x-request-id", "x-amzn-requestid")]
            headers += [("x-request-id", request.request_id), ("x-amzn-RequestId", request.request_id)]
            if result.stream is not None:
                request.log["streamEnd"] = send_stream(
                    self,
                    result.status,
                    headers,
                    result.stream,
                    idle_timeout=gateway.stream_idle_timeout,
                    max_seconds=gateway.stream_max_seconds,
                )
            else:
                self.send_bytes(result.status, headers, result.body, close=close, head=self.command == "HEAD")
            if gateway._access_log is not None:
                gateway._access_log(
                    {
                        "type": "access",
                        "requestId": request.request_id,
                        "httpMethod": request.method,
                        "resourcePath": request.log.pop("resourcePath", None),  # never the raw path or query
                        "status": result.status,
                        "latencyMs": round((time.perf_counter() - started) * 1000, 3),
                        "sourceIp": request.source_ip,
                        **request.log,
                    }
                )

        # http.server dispatches on these names.
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle  # noqa: N815

        def __getattr__(self, name: str) -> Any:
            # Any other method token (TRACE, QUERY, ...) goes through the same path, so it gets the contract's 405/404
            # instead of http.server's HTML 501 page.
            if name.startswith("do_") and name[3:].isalpha() and name[3:].isupper():
                return self._handle
            raise AttributeError(name)

    return GatewayHandler
