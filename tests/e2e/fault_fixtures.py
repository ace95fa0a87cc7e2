"""Helpers for the fault-injection and fuzz tests: keys on a running stack, and private stacks with their own policy.

The shared session stack (conftest.py ``local_stack``) is left alone: a test that stops DynamoDB Local or breaks the
upstream gets its own `LocalStack`, started on free ports and stopped by PID.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bulwark.auth.key_admin import KeyAdmin
from bulwark.auth.pepper import Pepper
from bulwark.settings import Settings
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeysTable
from bulwark_dev.local.dynamodb_local import DynamoDBLocal, local_dynamodb_client
from bulwark_dev.local.stack import LocalStack
from tests.e2e.conftest import LineCapture

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "layers/bulwark/bulwark/policy.yaml"


def create_key(env: dict[str, str], *, role: str = "developer", name: str = "test") -> str:
    """A new API key on the stack whose CLI environment is `env` (the secret, shown once)."""
    cfg = Settings.from_env(env)
    ddb = local_dynamodb_client(env["AWS_ENDPOINT_URL_DYNAMODB"], env["AWS_ACCESS_KEY_ID"])
    admin = KeyAdmin(KeysTable(ddb, cfg.keys_table), CountersTable(ddb, cfg.counters_table), Pepper(cfg))
    secret, _ = admin.create(name=name, role=role)
    return secret


def write_policy(directory: Path, **changes: Any) -> Path:
    """The shipped policy with top-level sections replaced or merged (dicts are merged one level deep)."""
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextmanager
def private_stack(
    tmp: Path, policy: Path | None = None, *, dynamodb: DynamoDBLocal | None = None
) -> Iterator[tuple[LocalStack, LineCapture]]:
    """A whole local stack for one test module, on free ports, stopped (by PID) at the end; its tables in a database
    of its own in `dynamodb` when given (the process's shared one), else in a DynamoDB Local of its own."""
    lines = LineCapture()
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        policy_file=policy,
        state_dir=tmp / "state",
        progress=None,
        log_stream=lines,
        dynamodb=dynamodb,
    )
    stack.start()
    try:
        yield stack, lines
    finally:
        stack.stop()


class SlowModel(ThreadingHTTPServer):
    """An OpenAI-compatible chat upstream that answers with the last user message after `hold_seconds`: each call
    holds an invoker environment (and the functions before it) that long, whatever the machine's load."""

    def __init__(self, hold_seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.hold_seconds = hold_seconds
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _SlowHandler(BaseHTTPRequestHandler):
    server: SlowModel

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        time.sleep(self.server.hold_seconds)
        message = {"role": "assistant", "content": str(request["messages"][-1]["content"])}
        body = json.dumps(
            {
                "id": "chatcmpl-slow",
                "object": "chat.completion",
                "created": 0,
                "model": str(request.get("model", "slow")),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass
