"""Lean AWS clients for the calls every request makes: DynamoDB and Secrets Manager (AWS JSON protocol) and Lambda
Invoke. Same request and response shapes as boto3's low-level clients, a fraction of the CPU, and no botocore import
at cold start.

Each client keeps pooled keep-alive connections (a warm Lambda container reuses its TLS session), signs with SigV4
(bulwark.aws.sigv4), honours the same endpoint variables as the SDK (``AWS_ENDPOINT_URL_<SERVICE>``,
``AWS_ENDPOINT_URL``, ``AWS_USE_FIPS_ENDPOINT``), checks DynamoDB's CRC32, and retries only what is safe to retry,
fast: this sits on the request path and must fail closed quickly, never hang.
"""

from __future__ import annotations

import functools
import json
import os
import random
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bulwark.aws.keepalive import Headers, KeepAlivePool, Proxy
from bulwark.aws.sigv4 import CredentialSource, CredentialsUnavailable, Signer
from bulwark.observability.tracing import subsegment

_T = TypeVar("_T")
USER_AGENT = "bulwark-aws-wire/1"
# Error codes worth one more attempt (throttling and transient service faults), as the SDK's standard mode.
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)


@contextmanager
def _subsegment(service: str, operation: str, region: str) -> Iterator[dict[str, str]]:
    """Yields the headers that carry the trace (X-Amzn-Trace-Id) to the callee; empty when tracing is off."""
    with subsegment(service, "aws") as sub:
        if sub is None:
            yield {}
            return
        sub.set_aws({"operation": operation, "region": region})
        sampled = "1" if getattr(sub, "sampled", False) else "0"
        yield {"X-Amzn-Trace-Id": f"Root={sub.trace_id};Parent={sub.id};Sampled={sampled}"}


class AwsError(Exception):
    """Base of the errors the lean clients raise."""


class AwsServiceError(AwsError):
    """AWS answered with an error. ``code`` is the short error code (e.g. ConditionalCheckFailedException)."""

    def __init__(self, code: str, message: str, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{code} ({status})")  # never the service's message: it can quote request values
        self.code = code
        self.message = message
        self.status = status
        self.body = body


class AwsTransportError(AwsError):
    """No usable answer: connection refused or reset, timeout, bad checksum, unparseable body, no credentials."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str  # host[:port] as it goes in the Host header
    hostname: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default = (parts.scheme, port) in (("https", 443), ("http", 80))
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal, as in a URL
        host = name if default else f"{name}:{port}"
        return cls(parts.scheme, host, parts.hostname, port, parts.path.rstrip("/"))


def resolve_endpoint(service_env: str, dns_prefix: str, region: str, environ: dict[str, str] | None = None) -> Endpoint:
    """The URL the SDK would use: ``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL``, then the regional one."""
    env = os.environ if environ is None else environ
    explicit = env.get(f"AWS_ENDPOINT_URL_{service_env}") or env.get("AWS_ENDPOINT_URL")
    if explicit:
        return Endpoint.parse(explicit)
    fips = env.get("AWS_USE_FIPS_ENDPOINT", "").lower() == "true"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return Endpoint.parse(f"https://{dns_prefix}{'-fips' if fips else ''}.{region}.{suffix}")


def proxy_for(endpoint: Endpoint, environ: dict[str, str] | None = None) -> Proxy | None:
    """The proxy the SDK would use for an https endpoint: ``https_proxy`` / ``HTTPS_PROXY`` unless ``no_proxy`` /
    ``NO_PROXY`` names the host (``*``, the host, or a domain it is in). Only http:// proxy URLs (a CONNECT tunnel
    carries the TLS, so the proxy never sees the request); plain-http endpoints, which only local development uses,
    are reached directly. A proxy URL Bulwark cannot use is an error, never a silent direct connection."""
    env = os.environ if environ is None else environ
    if endpoint.scheme != "https":
        return None
    url = env.get("https_proxy") or env.get("HTTPS_PROXY")
    if not url:
        return None
    host = endpoint.hostname.lower()
    for raw in (env.get("no_proxy") or env.get("NO_PROXY") or "").lower().split(","):
        entry = raw.strip()
        domain = entry.removeprefix("*").lstrip(".")
        if entry == "*" or (domain and (host == domain or host.endswith(f".{domain}"))):
            return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("HTTPS_PROXY must be an http:// proxy URL (the TLS to AWS is tunnelled through it)")
    authorization = None
    if parts.username is not None:
        import base64  # only with proxy credentials

        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return parts.hostname, parts.port or 80, authorization


_TRACE_NAMES = {
    "dynamodb": "DynamoDB",
    "lambda": "Lambda",
    "secretsmanager": "SecretsManager",
    "kms": "KMS",
    "appconfig": "AppConfigData",
}


@functools.cache
def tls_context(cafile: str | None) -> ssl.SSLContext:
    """The process's TLS context for AWS endpoints: certificates and host names verified, AWS_CA_BUNDLE (as the SDK
    reads it) for a private CA. One per process, made at the first TLS connection: loading the CA store costs ~25 ms
    (OpenSSL 3 parses every certificate), which a context per client would pay again at every cold start (boto3 also
    loads it at its first connection, not when the client is made)."""
    return ssl.create_default_context(cafile=cafile)


class _SignedClient:
    resend_on_stale = True  # see KeepAlivePool.send

    def __init__(
        self,
        *,
        service: str,
        endpoint: Endpoint,
        region: str,
        credentials: CredentialSource,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> None:
        self.endpoint = endpoint
        self.region = region
        self._trace_name = _TRACE_NAMES.get(service, service)
        self._signer = Signer(region, service, credentials)
        cafile = os.environ.get("AWS_CA_BUNDLE") or None
        self._pool = KeepAlivePool(
            endpoint.hostname,
            endpoint.port,
            tls=functools.partial(tls_context, cafile) if endpoint.scheme == "https" else None,
            proxy=proxy_for(endpoint),
            connect_timeout=connect_timeout,
            resend_on_stale=self.resend_on_stale,
        )
        self._read_timeout = read_timeout
        self._max_attempts = max(1, max_attempts)

    def _send_once(
        self,
        path: str,
        headers: dict[str, str],
        body: bytes,
        unsigned: dict[str, str] | None = None,
        *,
        method: str = "POST",
        query: str = "",
    ) -> tuple[int, Headers, bytes]:
        try:
            signed = self._signer.sign(method, self.endpoint.host, path, headers, body, query=query)
        except CredentialsUnavailable as exc:
            raise AwsTransportError("no credentials") from exc
        # Not signed, as the SDK does: proxies and AWS itself may rewrite them.
        signed["User-Agent"] = USER_AGENT
        if unsigned:
            signed.update(unsigned)
        try:
            target = f"{path}?{query}" if query else path
            return self._pool.send(method, target, signed, body, self._read_timeout)
        except OSError as exc:  # refused, reset, timed out, malformed answer (HttpProtocolError)
            raise AwsTransportError(type(exc).__name__) from exc

    def _with_retries(self, attempt_call: Callable[[], _T]) -> _T:
        """Run ``attempt_call`` up to max_attempts times on transport faults and retryable codes, with jitter."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return attempt_call()
            except AwsServiceError as exc:
                if (exc.code not in _RETRYABLE_CODES and exc.status < 500) or attempt == self._max_attempts:
                    raise
            except AwsTransportError:
                if attempt == self._max_attempts:
                    raise
            time.sleep(random.uniform(0, 0.025 * 2**attempt))  # noqa: S311 - jitter, not security
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._pool.close()


def _error_code(headers: Headers, body: dict[str, Any]) -> str:
    raw = headers.get("x-amzn-ErrorType") or str(body.get("__type") or body.get("code") or "")
    # "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "ResourceNotFoundException:http://..."
    return raw.split(":", 1)[0].rsplit("#", 1)[-1] or "UnknownError"


def _error_message(body: dict[str, Any]) -> str:
    return str(body.get("message") or body.get("Message") or "")


def rest_json_error(status: int, headers: Headers, data: bytes) -> AwsServiceError:
    """A REST-JSON service's error answer (Lambda, AppConfigData): the code in x-amzn-ErrorType or the body."""
    try:
        parsed = json.loads(data) if data else {}
    except ValueError:
        parsed = {}
    body = parsed if isinstance(parsed, dict) else {}
    return AwsServiceError(_error_code(headers, body), _error_message(body), status, body)


class JsonServiceClient(_SignedClient):
    """An AWS JSON-protocol service (DynamoDB: 1.0, Secrets Manager: 1.1): ``call("UpdateItem", {...})``."""

    def __init__(self, *, target_prefix: str, json_version: str, check_crc32: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target_prefix = target_prefix
        self._content_type = f"application/x-amz-json-{json_version}"
        self._check_crc32 = check_crc32
        self._path = self.endpoint.base_path or "/"

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": self._content_type, "X-Amz-Target": f"{self._target_prefix}.{operation}"}
        with _subsegment(self._trace_name, operation, self.region):
            return self._with_retries(lambda: self._attempt(headers, body))

    def _attempt(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        status, response_headers, data = self._send_once(self._path, headers, body)
        if self._check_crc32:
            expected = response_headers.get("x-amz-crc32")
            if expected is not None and expected.isdigit() and int(expected) != zlib.crc32(data):
                raise AwsTransportError("CRC32 mismatch")  # a corrupted answer is never used
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            raise AwsTransportError(f"unparseable answer (HTTP {status})") from None
        if not isinstance(parsed, dict):
            raise AwsTransportError(f"unexpected answer (HTTP {status})")
        if status >= 300:
            raise AwsServiceError(_error_code(response_headers, parsed), _error_message(parsed), status, parsed)
        return parsed


class DynamoDBClient(JsonServiceClient):
    """boto3-shaped methods for the operations Bulwark uses."""

    def get_item(self, **params: Any) -> dict[str, Any]:
        return self.call("GetItem", params)

    def put_item(self, **params: Any) -> dict[str, Any]:
        return self.call("PutItem", params)

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self.call("UpdateItem", params)

    def delete_item(self, **params: Any) -> dict[str, Any]:
        return self.call("DeleteItem", params)

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return self.call("BatchGetItem", params)

    def scan(self, **params: Any) -> dict[str, Any]:
        return self.call("Scan", params)

    def query(self, **params: Any) -> dict[str, Any]:
        return self.call("Query", params)


class SecretsManagerClient(JsonServiceClient):
    def get_secret_value(self, **params: Any) -> dict[str, Any]:
        return self.call("GetSecretValue", params)


class KmsClient(JsonServiceClient):
    """KMS (AWS JSON 1.1, ``TrentService``): the HMAC operations the validator → invoker trust uses."""

    def generate_mac(self, **params: Any) -> dict[str, Any]:
        return self.call("GenerateMac", params)

    def verify_mac(self, **params: Any) -> dict[str, Any]:
        return self.call("VerifyMac", params)


class _Payload:
    """The ``Payload`` of a boto3 invoke response: a readable body."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data


class LambdaClient(_SignedClient):
    """Lambda Invoke (REST-JSON), boto3-shaped: ``invoke(FunctionName=..., Payload=...)``."""

    resend_on_stale = False  # never sent twice, not even on a connection that closed under us

    def invoke(self, *, FunctionName: str, Payload: bytes, InvocationType: str = "RequestResponse") -> dict[str, Any]:  # noqa: N803 - boto3's names
        quoted = urllib.parse.quote(FunctionName, safe="")
        path = f"{self.endpoint.base_path}/2015-03-31/functions/{quoted}/invocations"
        headers = {"Content-Type": "application/json", "X-Amz-Invocation-Type": InvocationType}
        # Invoke is not idempotent: one attempt, whatever max_attempts says (a retry could run the model twice).
        with _subsegment(self._trace_name, "Invoke", self.region) as trace:
            status, response_headers, data = self._send_once(path, headers, Payload, trace)
        if status >= 300:
            raise rest_json_error(status, response_headers, data)
        result: dict[str, Any] = {"StatusCode": status, "Payload": _Payload(data)}
        if function_error := response_headers.get("X-Amz-Function-Error"):
            result["FunctionError"] = function_error
        if version := response_headers.get("X-Amz-Executed-Version"):
            result["ExecutedVersion"] = version
        return result
