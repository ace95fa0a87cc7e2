"""Bulwark's Lambda runtime loop (bulwark.api.stream_runtime) against a local server speaking the Lambda Runtime API:
a handler's iterator goes out in streaming mode (chunked, each piece when it is yielded), a failure mid-stream in
the error trailers, a plain value as one JSON response, an exception as an invocation error."""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HANDLER = """
import time

def handler(event, context):
    if event.get("raise"):
        raise ValueError("bad event")
    if not event.get("stream"):
        return {"echo": event, "request_id": context.aws_request_id}

    def pieces():
        for i in range(5):
            time.sleep(0.05)
            yield f"piece{i};".encode()
        if event.get("fail"):
            raise RuntimeError("broke mid-stream")

    return pieces()
"""


class RuntimeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        event = self.server.events.get()
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", event["id"])
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        started = time.perf_counter()
        result: dict[str, Any] = {"path": self.path, "headers": dict(self.headers.items()), "pieces": []}
        if self.headers.get("Transfer-Encoding") == "chunked":
            trailers: dict[str, str] = {}
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    while (line := self.rfile.readline()) not in (b"\r\n", b""):
                        name, _, value = line.decode().partition(":")
                        trailers[name.strip()] = value.strip()
                    break
                result["pieces"].append((time.perf_counter() - started, self.rfile.read(size)))
                self.rfile.readline()
            result["trailers"] = trailers
        else:
            result["body"] = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.results.put(result)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[RuntimeApi]:
    (tmp_path / "app.py").write_text(HANDLER)
    api = RuntimeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "_HANDLER": "app.handler",
    }
    proc = subprocess.Popen([sys.executable, "-m", "bulwark.api.stream_runtime"], env=env)
    yield api
    proc.terminate()
    proc.wait(timeout=5)
    api.shutdown()
    api.server_close()


def invoke(api: RuntimeApi, event: dict[str, Any]) -> dict[str, Any]:
    api.events.put(event)
    return api.results.get(timeout=10)


def test_an_iterator_is_streamed_piece_by_piece(runtime: RuntimeApi) -> None:
    result = invoke(runtime, {"id": "req-1", "stream": True})

    assert result["path"] == "/2018-06-01/runtime/invocation/req-1/response"
    assert result["headers"]["Lambda-Runtime-Function-Response-Mode"] == "streaming"
    assert [p for _t, p in result["pieces"]] == [f"piece{i};".encode() for i in range(5)]
    # Each piece is sent when it is yielded, 50 ms apart: a runtime that buffered would deliver all five at once.
    # (A busy machine can delay a read and bunch two pieces, so not every gap is held to it, only most of them.)
    times = [t for t, _p in result["pieces"]]
    assert times[-1] - times[0] >= 0.1
    assert sum(b - a >= 0.03 for a, b in itertools.pairwise(times)) >= 2
    assert result["trailers"] == {}


def test_a_failure_mid_stream_is_reported_in_the_trailers(runtime: RuntimeApi) -> None:
    result = invoke(runtime, {"id": "req-2", "stream": True, "fail": True})

    assert len(result["pieces"]) == 5
    assert result["trailers"]["Lambda-Runtime-Function-Error-Type"] == "Runtime.RuntimeError"
    body = json.loads(base64.b64decode(result["trailers"]["Lambda-Runtime-Function-Error-Body"]))
    assert body["errorMessage"] == "broke mid-stream"


def test_a_plain_value_is_one_json_response_and_an_exception_an_error(runtime: RuntimeApi) -> None:
    plain = invoke(runtime, {"id": "req-3"})
    failed = invoke(runtime, {"id": "req-4", "raise": True})

    assert json.loads(plain["body"]) == {"echo": {"id": "req-3"}, "request_id": "req-3"}
    assert failed["path"] == "/2018-06-01/runtime/invocation/req-4/error"
    assert json.loads(failed["body"])["errorType"] == "ValueError"
