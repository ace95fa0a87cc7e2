"""Bulwark's Lambda runtime loop: the Runtime API, with its streaming response mode, in the standard library.

Why our own loop rather than the Lambda Web Adapter: the adapter puts an extension process and an HTTP server in
front of the handler (one more process to start, one more loopback hop per chunk) and would have the handlers
rewritten as a web application; this loop is the same Python process the managed runtime would start, imports the
same handler, and adds nothing to init but this module (standard library only). It runs on the managed python3.13
runtime through AWS_LAMBDA_EXEC_WRAPPER (bulwark/api/stream_bootstrap), so no interpreter is shipped.

A handler that returns an iterator of bytes is answered in streaming mode (Lambda-Runtime-Function-Response-Mode:
streaming, chunked, each piece sent as it is produced); a failure after the first piece is reported in the
Lambda-Runtime-Function-Error-Type/-Body trailers, as the Runtime API specifies. Anything else is answered as JSON.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

API_VERSION = "2018-06-01"
STREAM_CONTENT_TYPE = "application/octet-stream"


class LambdaContext:
    """What handlers and Powertools read from the Python runtime's context object."""

    def __init__(self, headers: http.client.HTTPMessage) -> None:
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0") or 0)
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = headers.get("Lambda-Runtime-Aws-Tenant-Id")

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _error_body(exc: BaseException) -> bytes:
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
        }
    ).encode()


class RuntimeClient:
    def __init__(self, address: str) -> None:
        host, _, port = address.partition(":")
        self._conn = http.client.HTTPConnection(host, int(port or 80))

    def next(self) -> tuple[http.client.HTTPMessage, bytes]:
        self._conn.request("GET", f"/{API_VERSION}/runtime/invocation/next")
        response = self._conn.getresponse()
        return response.headers, response.read()

    def respond(self, request_id: str, body: bytes) -> None:
        self._post(f"/{API_VERSION}/runtime/invocation/{request_id}/response", body, {})

    def error(self, request_id: str, exc: BaseException) -> None:
        headers = {"Lambda-Runtime-Function-Error-Type": f"Runtime.{type(exc).__name__}"}
        self._post(f"/{API_VERSION}/runtime/invocation/{request_id}/error", _error_body(exc), headers)

    def init_error(self, exc: BaseException) -> None:
        headers = {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"}
        self._post(f"/{API_VERSION}/runtime/init/error", _error_body(exc), headers)

    def stream(self, request_id: str, pieces: Iterator[bytes]) -> None:
        """Streaming mode: chunked transfer, each piece on the wire as soon as the handler yields it."""
        conn = self._conn
        conn.putrequest("POST", f"/{API_VERSION}/runtime/invocation/{request_id}/response")
        conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", STREAM_CONTENT_TYPE)
        conn.putheader("Trailer", "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body")
        conn.endheaders()
        trailers = b""
        try:
            while True:
                try:
                    piece = next(pieces)
                except StopIteration:
                    break
                except Exception as exc:  # the handler failed mid-stream: reported in the trailers
                    body = base64.b64encode(_error_body(exc)).decode()
                    trailers = (
                        f"Lambda-Runtime-Function-Error-Type: Runtime.{type(exc).__name__}\r\n"
                        f"Lambda-Runtime-Function-Error-Body: {body}\r\n"
                    ).encode()
                    break
                if piece:
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))  # OSError: the reader went away
        except OSError:
            conn.close()
            return
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # the handler's cleanup (settlement, audit) runs however the stream ended
        try:
            conn.send(b"0\r\n" + trailers + b"\r\n")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            # The response was cut (the reader went away): the next invocation gets a fresh connection.
            conn.close()

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        self._conn.request("POST", path, body=body, headers=headers)
        self._conn.getresponse().read()


def load_handler(spec: str) -> Callable[[Any, Any], Any]:
    module_name, _, attribute = spec.rpartition(".")
    module = importlib.import_module(module_name)
    handler: Callable[[Any, Any], Any] = getattr(module, attribute)
    return handler


def is_stream(result: Any) -> bool:
    return isinstance(result, Iterator)


def serve(client: RuntimeClient, handler: Callable[[Any, Any], Any]) -> None:
    while True:
        headers, raw = client.next()
        request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        trace = headers.get("Lambda-Runtime-Trace-Id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        try:
            result = handler(json.loads(raw or b"{}"), LambdaContext(headers))
            if is_stream(result):
                client.stream(request_id, result)
            else:
                client.respond(request_id, json.dumps(result).encode())
        except Exception as exc:  # the function's error, never the end of the loop
            client.error(request_id, exc)


def main() -> None:
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    try:
        handler = load_handler(os.environ["_HANDLER"])
    except Exception as exc:
        client.init_error(exc)
        raise SystemExit(1) from exc
    serve(client, handler)


if __name__ == "__main__":
    main()
