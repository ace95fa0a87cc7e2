"""How a local Lambda worker streams a response, and how the gateway emulator (or any caller) reads it.

The wire is Lambda's own InvokeWithResponseStream: ``POST /2021-11-15/functions/{name}/response-streaming-invocations``
answered with HTTP chunked transfer of an ``application/vnd.amazon.eventstream``: one PayloadChunk event per piece the
handler yields, sent the moment it is yielded, then InvokeComplete (with ErrorCode/ErrorDetails if the handler failed
mid-stream). A handler that returns a plain value has it sent as one PayloadChunk (JSON), as Lambda does.

Kept apart from the worker's process model (lambda_worker.py) so the two can change independently: the worker only
hands over a callable that runs the handler and returns its raw result.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from bulwark.aws.eventstream import CONTENT_TYPE, Decoder, event

STREAM_PREFIX = "/2021-11-15/functions/"
STREAM_SUFFIX = "/response-streaming-invocations"
READ_SIZE = 65_536


def stream_path(name: str) -> str:
    return f"{STREAM_PREFIX}{urllib.parse.quote(name, safe='')}{STREAM_SUFFIX}"


def _pieces(result: Any) -> Iterator[bytes]:
    if isinstance(result, Iterator):
        return result
    return iter([json.dumps(result).encode()])


def serve_stream_invocation(
    handler: Any,  # the worker's FastHandler serving this request
    run: Callable[[], Any],
    *,
    request_id: str,
    timeout: float,
    on_error: Callable[[BaseException], None],
    on_done: Callable[[], None] = lambda: None,
) -> None:
    """Answer one streaming invocation on ``handler``'s connection; the function timeout bounds the whole stream.
    ``on_done`` runs when the handler's part is over, before InvokeComplete goes out: a caller that has read
    InvokeComplete may invoke this environment again at once."""
    wfile = handler.wfile
    head = [
        "HTTP/1.1 200 OK",
        f"Content-Type: {CONTENT_TYPE}",
        "Transfer-Encoding: chunked",
        f"x-amzn-RequestId: {request_id}",
        "X-Amz-Executed-Version: $LATEST",
        f"Date: {handler.date_time_string()}",
    ]
    # The head goes out with the first event, and InvokeComplete with the final chunk: fewer writes per response.
    pending = [("\r\n".join(head) + "\r\n\r\n").encode("latin-1")]

    def send(message: bytes, last: bytes = b"") -> None:
        wfile.write(b"".join(pending) + b"%x\r\n%s\r\n" % (len(message), message) + last)
        pending.clear()
        wfile.flush()

    deadline = time.monotonic() + timeout
    complete: dict[str, str] = {}
    pieces: Iterator[bytes] | None = None
    try:
        pieces = _pieces(run())
        for piece in pieces:
            if piece:
                send(event("PayloadChunk", piece))
            if time.monotonic() > deadline:
                complete = {"ErrorCode": "Sandbox.Timedout", "ErrorDetails": f"Task timed out after {timeout:.2f} s"}
                break
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True  # the caller went away: stop the function's output
        return
    except Exception as exc:
        on_error(exc)
        complete = {"ErrorCode": "Unhandled", "ErrorDetails": f"{type(exc).__name__}: {exc}"}
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # runs the handler's cleanup (settlement, upstream close) when the stream ends early
        on_done()
    try:
        send(event("InvokeComplete", json.dumps(complete).encode(), "application/json"), b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True


class StreamThrottled(RuntimeError):
    """The function is at its concurrency: Lambda answered the streaming invoke 429."""


class StreamFailed(RuntimeError):
    """The function failed after its stream started, or the stream broke."""


class EventStreamResponse:
    """The PayloadChunk bytes of one streaming invocation, as they arrive. close() drops the connection."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response
        self.status = response.status

    def __iter__(self) -> Iterator[bytes]:
        decoder = Decoder()
        try:
            while True:
                data = self._response.read1(READ_SIZE)  # TimeoutError after the idle timeout without a byte
                if not data:
                    raise StreamFailed("stream ended without InvokeComplete")
                for headers, payload in decoder.feed(data):
                    if headers.get(":event-type") == "PayloadChunk":
                        yield payload
                    elif headers.get(":event-type") == "InvokeComplete":
                        details = json.loads(payload or b"{}")
                        if details.get("ErrorCode"):
                            raise StreamFailed(str(details["ErrorCode"]))
                        return
        finally:
            self.close()

    def close(self) -> None:
        self._conn.close()


def open_event_stream(port: int, name: str, payload: bytes, *, idle_timeout: float) -> EventStreamResponse:
    """Start a streaming invocation on the worker at 127.0.0.1:``port``; reads wait at most ``idle_timeout``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=idle_timeout)
    try:
        conn.request("POST", stream_path(name), body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
    except BaseException:
        conn.close()
        raise
    if response.status != 200:
        response.read()
        conn.close()
        raise StreamFailed(f"streaming invoke answered {response.status}")
    return EventStreamResponse(conn, response)


def send_stream(
    handler: Any, status: int, headers: list[tuple[str, str]], body: Any, *, idle_timeout: float, max_seconds: float
) -> str:
    """Send a streamed response on ``handler``'s connection with chunked transfer, each piece flushed as it comes.

    As API Gateway does: no byte from the integration for ``idle_timeout`` seconds, or a stream longer than
    ``max_seconds``, ends it (the connection is closed mid-body, so the client sees a truncated stream). A client that
    goes away closes the integration's stream, which stops the function. Returns how the stream ended.
    """
    reason = handler.responses.get(status, ("",))[0]
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers), "Transfer-Encoding: chunked"]
    lines.append(f"Date: {handler.date_time_string()}")
    wfile = handler.wfile
    started = time.monotonic()
    ended = "completed"
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")  # sent with the first piece
    try:
        for piece in body:
            if piece:
                wfile.write(head + b"%x\r\n%s\r\n" % (len(piece), piece))
                head = b""
                wfile.flush()
            if time.monotonic() - started > max_seconds:
                ended = "max_duration"
                break
        else:
            wfile.write(head + b"0\r\n\r\n")
            wfile.flush()
            return ended
    except TimeoutError:
        ended = "idle_timeout"
    except (BrokenPipeError, ConnectionResetError):
        ended = "client_disconnected"
    except (OSError, StreamFailed):
        ended = "integration_failed"
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    handler.close_connection = True  # the body is cut short: this connection cannot carry another response
    return ended


class ReleasingStream:
    """A stream that calls ``release`` once, when it ends or is closed (its execution environment is free again)."""

    def __init__(self, stream: EventStreamResponse, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        finally:
            self.close()

    def close(self) -> None:
        self._stream.close()
        release, self._release = self._release, None
        if release is not None:
            release()
