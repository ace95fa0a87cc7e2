"""End-to-end fixture: the whole local stack (`bulwark local` minus the CLI) on free ports, for the session.

``local_stack`` exposes ``base_url`` (the API, as the contract's local base URL), ``openai_base_url`` (base_url + /v1),
``dynamodb_endpoint``, ``table_names``, ``demo_model_url``, ``env`` (what the `bulwark` CLI needs to manage keys on this
stack), ``log_lines`` (every worker and gateway line seen so far, prefixed ``[function-name]``), ``log_file`` and
``stack`` (the LocalStack itself, e.g. for ``stack.worker_stats()``).
"""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from bulwark_dev.local.stack import LocalStack
from tests.e2e.oidc import Issuer

ROOT = Path(__file__).resolve().parents[2]


class LineCapture(io.StringIO):
    """A text stream that keeps whole lines (the stack writes from several threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *complete, self._partial = self._partial.split("\n")
            self.lines.extend(complete)
        return len(text)


class InvokeEcho(ThreadingHTTPServer):
    """A legacy JSON model on loopback for POST /v1/models/{model}/invoke: answers {"output": <the body it got>} and
    keeps the last body, so a test sees exactly what the invoker sent upstream."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _InvokeEchoHandler)
        self.bodies: list[Any] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/invoke"


class _InvokeEchoHandler(BaseHTTPRequestHandler):
    server: InvokeEcho

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.bodies.append(body)
        out = json.dumps({"output": body, "usage": {"prompt_tokens": 3, "completion_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *_args: Any) -> None:
        pass


# A model that does not speak chat, behind the generic invoke route (tests/e2e/test_invoke_guardrails_e2e.py).
INVOKE_MODEL = "legacy-echo"
INVOKE_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "additionalProperties": False,
    "properties": {
        "inputs": {"type": "string", "maxLength": 20000},
        "context": {"type": "array", "maxItems": 8, "items": {"type": "object", "properties": {
            "title": {"type": "string"}, "text": {"type": "string"}}}},
        "parameters": {"type": "object", "properties": {"max_new_tokens": {"type": "integer"}}},
    },
}  # fmt: skip


@dataclass
class LocalStackFixture:
    stack: LocalStack
    base_url: str
    dynamodb_endpoint: str
    table_names: dict[str, str]
    demo_model_url: str
    env: dict[str, str]
    capture: LineCapture
    invoke_echo: InvokeEcho | None = field(default=None)

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def log_lines(self) -> list[str]:
        return list(self.capture.lines)

    @property
    def log_file(self) -> Path | None:
        return self.stack.log_file


E2E_FAILED_AUTH_THRESHOLD = 200


def _e2e_policy(state_dir: Path, issuer: Issuer, invoke_url: str) -> Path:
    """The shipped policy, except that the failed-attempt threshold per source IP is higher: every e2e test calls
    from 127.0.0.1, and the tests that send wrong keys on purpose must not lock the others out. The lockout tests
    (test_brute_force_e2e.py) run on a private stack with their own low threshold."""
    import yaml

    from bulwark.policy import default_policy_path

    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data.setdefault("network", {}).setdefault("failed_auth", {})["threshold"] = E2E_FAILED_AUTH_THRESHOLD
    data["issuers"] = [issuer.policy_entry()]  # OAuth 2.0 / JWT callers too (tests/e2e/oidc.py)
    data["tenants"] = {"e2e-capped": {"budget": {"day_usd": "0.001"}}}  # test_budget_e2e.py: a tenant's own budget
    data["models"][INVOKE_MODEL] = {
        "description": "Legacy JSON echo for the invoke route.",
        "upstream": {"kind": "http", "url": invoke_url, "chat": False, "max_retries": 0},
        "input_schema": INVOKE_SCHEMA,
    }
    path = state_dir / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: Issuer, shared_dynamodb: DynamoDBLocal
) -> Iterator[LocalStackFixture]:
    capture = LineCapture()
    state_dir = tmp_path_factory.mktemp("bulwark-state")
    invoke_echo = InvokeEcho()
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        state_dir=state_dir,
        policy_file=_e2e_policy(state_dir, oidc_issuer, invoke_echo.url),
        progress=sys.stderr,
        log_stream=capture,
        dynamodb=shared_dynamodb,
    )
    stack.start()
    try:
        yield LocalStackFixture(
            stack=stack,
            base_url=stack.base_url,
            dynamodb_endpoint=stack.dynamodb_endpoint,
            table_names=stack.table_names,
            demo_model_url=stack.demo_model_url,
            env=stack.cli_environment(),
            capture=capture,
            invoke_echo=invoke_echo,
        )
    finally:
        stack.stop()
        invoke_echo.shutdown()
        invoke_echo.server_close()
