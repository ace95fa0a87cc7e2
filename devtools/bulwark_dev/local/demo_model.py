"""The DEMO model for `bulwark local`: an OpenAI-compatible echo server on loopback. It is not a real model.

POST /v1/chat/completions (plain and `stream: true` as server-sent events, with a final usage chunk when
`stream_options.include_usage`), GET /v1/models, and GET /__demo/last-request: the last request body received, so
end-to-end tests can show what the upstream actually saw. Dependency-free and keep-alive (HTTP/1.1 with
Content-Length, chunked for streams): the benchmark compares Bulwark's added latency against calling it directly.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

DEMO_MODEL = "demo-echo"
ECHO_PREFIX = "Echo from the Bulwark demo model: "
MAX_BODY_BYTES = 8 * 1024 * 1024


def _tokens(text: str) -> int:
    return len(text.split())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def echo_answer(request: dict[str, Any]) -> tuple[str, int, int]:
    """(answer text, prompt tokens, completion tokens) — tokens estimated by word count."""
    messages = [m for m in request.get("messages", []) if isinstance(m, dict)]
    last_user = next((_content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    text = ECHO_PREFIX + last_user
    prompt = sum(_tokens(_content_text(m.get("content"))) for m in messages)
    return text, prompt, _tokens(text)


class DemoModelServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.last_request: dict[str, Any] | None = None
        self.lock = threading.Lock()
        # A stream's pace (seconds between tokens) and length (the echo said this many times), so streaming tests
        # and benchmarks see tokens produced over time, as from a real model.
        self.token_delay = 0.0
        self.repeat = 1
        self.streams_cut = 0  # streams whose reader went away before the end

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (keep-alive closed, benchmark ending) is normal; do not print a traceback.
        logger.debug("demo model: connection error", exc_info=True)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes; Nagle would add ~40 ms per answer
    server: DemoModelServer
    server_version = "BulwarkDemoModel/1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("demo model: " + format, *args)

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send_json(
                200,
                {"object": "list", "data": [{"id": DEMO_MODEL, "object": "model", "created": 0, "owned_by": "demo"}]},
            )
        elif self.path == "/__demo/last-request":
            if not ipaddress.ip_address(self.client_address[0]).is_loopback:
                self._error(403, "Loopback only.", "forbidden")
                return
            with self.server.lock:
                last = self.server.last_request
            self._send_json(200, {"body": last})
        else:
            self._error(404, "No such route.", "not_found")

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._error(404, "No such route.", "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, "Body too large.", "request_too_large")
            return
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            self._error(400, "Body is not valid JSON.", "invalid_json")
            return
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            self._error(400, "`messages` is required.", "invalid_value")
            return
        with self.server.lock:
            self.server.last_request = request
        text, prompt, completion = echo_answer(request)
        cid, created = f"chatcmpl-demo-{uuid.uuid4().hex[:12]}", int(time.time())
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if request.get("stream"):
            completion *= max(1, self.server.repeat)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            self._stream(cid, created, text, usage if include_usage else None)
            return
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        body = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": DEMO_MODEL,
            "choices": [choice],
            "usage": usage,
        }
        self._send_json(200, body)

    def _stream(self, cid: str, created: int, text: str, usage: dict[str, int] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": DEMO_MODEL}
            body["choices"] = choices
            body.update(extra or {})
            self._write_chunk(b"data: " + json.dumps(body).encode() + b"\n\n")

        def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}

        chunk([delta({"role": "assistant", "content": ""})])
        words = text.split(" ") * max(1, self.server.repeat)
        delay = self.server.token_delay
        try:
            for i, word in enumerate(words):
                if delay:
                    time.sleep(delay)
                chunk([delta({"content": word if i == 0 else " " + word})])
        except (BrokenPipeError, ConnectionResetError):
            with self.server.lock:
                self.server.streams_cut += 1
            self.close_connection = True
            return
        chunk([delta({}, "stop")])
        if usage is not None:
            chunk([], {"usage": usage})
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def serve_demo_model(host: str = "127.0.0.1", port: int = 0) -> tuple[DemoModelServer, threading.Thread]:
    """Start the demo model in a daemon thread. Stop with `server.shutdown(); server.server_close()`."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError("the demo model listens on loopback only")
    server = DemoModelServer((host, port))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="bulwark-demo-model", daemon=True
    )
    thread.start()
    return server, thread
