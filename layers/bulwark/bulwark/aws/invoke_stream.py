"""Lambda InvokeWithResponseStream (POST /2021-11-15/functions/{name}/response-streaming-invocations), lean.

The answer is an event stream: PayloadChunk events carry the function's bytes as it writes them, one InvokeComplete
event ends it (with ErrorCode/ErrorDetails when the function failed mid-stream). Each stream has its own connection:
it is held for the whole stream, and closing it is how the caller stops the function's output (client went away).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

from bulwark.aws.eventstream import Decoder
from bulwark.aws.sigv4 import CredentialSource, CredentialsUnavailable, Signer
from bulwark.aws.wire import USER_AGENT, AwsServiceError, AwsTransportError, Endpoint, tls_context

READ_SIZE = 65_536


class FunctionStreamError(AwsTransportError):
    """The function failed after its stream had started (InvokeComplete with an ErrorCode)."""


class InvokeStream:
    """The PayloadChunk bytes, in order, as they arrive. Iterate, then (or instead) close()."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        decoder = Decoder()
        try:
            while True:
                data = self._response.read1(READ_SIZE)
                if not data:
                    break
                for headers, payload in decoder.feed(data):
                    kind = headers.get(":event-type")
                    if kind == "PayloadChunk":
                        yield payload
                    elif kind == "InvokeComplete":
                        details = json.loads(payload or b"{}")
                        if details.get("ErrorCode"):
                            raise FunctionStreamError(str(details["ErrorCode"]))
                        self.complete = True
                        return
                    elif headers.get(":message-type") == "exception":
                        raise FunctionStreamError(headers.get(":exception-type", "exception"))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise AwsTransportError(type(exc).__name__) from exc
        finally:
            self.close()
        raise AwsTransportError("stream ended without InvokeComplete")

    def close(self) -> None:
        self._conn.close()


class LambdaStreamClient:
    def __init__(
        self,
        *,
        service: str = "lambda",
        endpoint: Endpoint,
        region: str,
        credentials: CredentialSource,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int = 1,
    ) -> None:
        self.endpoint = endpoint
        self._signer = Signer(region, service, credentials)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout  # the longest silence between two pieces of a stream

    def invoke_with_response_stream(self, function_name: str, payload: bytes) -> InvokeStream:
        quoted = urllib.parse.quote(function_name, safe="")
        path = f"{self.endpoint.base_path}/2021-11-15/functions/{quoted}/response-streaming-invocations"
        headers = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"}
        try:
            signed = self._signer.sign("POST", self.endpoint.host, path, headers, payload)
        except CredentialsUnavailable as exc:
            raise AwsTransportError("no credentials") from exc
        signed["User-Agent"] = USER_AGENT
        conn = self._connection()
        try:
            conn.request("POST", path, body=payload, headers=signed)
            if conn.sock is not None:
                conn.sock.settimeout(self._read_timeout)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AwsTransportError(type(exc).__name__) from exc
        if response.status >= 300:
            data = response.read()
            conn.close()
            body: Any = {}
            try:
                body = json.loads(data) if data else {}
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            code = response.getheader("x-amzn-ErrorType", "") or str(body.get("__type", "ServiceException"))
            raise AwsServiceError(code.split(":")[0], str(body.get("message", "")), response.status, body)
        return InvokeStream(conn, response)

    def _connection(self) -> http.client.HTTPConnection:
        ep = self.endpoint
        if ep.scheme == "https":
            return http.client.HTTPSConnection(
                ep.hostname,
                ep.port,
                timeout=self._connect_timeout,
                context=tls_context(os.environ.get("AWS_CA_BUNDLE") or None),
            )
        return http.client.HTTPConnection(ep.hostname, ep.port, timeout=self._connect_timeout)
