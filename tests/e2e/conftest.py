"""End-to-end fixture: the whole local stack (`bulwark local` minus the CLI) on free ports, for the session.

``local_stack`` exposes ``base_url`` (the API, as the contract's local base URL), ``openai_base_url`` (base_url + /v1),
``dynamodb_endpoint``, ``table_names``, ``demo_model_url``, ``env`` (what the `bulwark` CLI needs to manage keys on this
stack), ``log_lines`` (every worker and gateway line seen so far, prefixed ``[function-name]``), ``log_file`` and
``stack`` (the LocalStack itself, e.g. for ``stack.worker_stats()``).
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@dataclass
class LocalStackFixture:
    stack: LocalStack
    base_url: str
    dynamodb_endpoint: str
    table_names: dict[str, str]
    demo_model_url: str
    env: dict[str, str]
    capture: LineCapture

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


def _e2e_policy(state_dir: Path, issuer: Issuer) -> Path:
    """The shipped policy, except that the failed-attempt threshold per source IP is higher: every e2e test calls
    from 127.0.0.1, and the tests that send wrong keys on purpose must not lock the others out. The lockout tests
    (test_brute_force_e2e.py) run on a private stack with their own low threshold."""
    import yaml

    from bulwark.policy import default_policy_path

    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data.setdefault("network", {}).setdefault("failed_auth", {})["threshold"] = E2E_FAILED_AUTH_THRESHOLD
    data["issuers"] = [issuer.policy_entry()]  # OAuth 2.0 / JWT callers too (tests/e2e/oidc.py)
    path = state_dir / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: Issuer) -> Iterator[LocalStackFixture]:
    capture = LineCapture()
    state_dir = tmp_path_factory.mktemp("bulwark-state")
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        state_dir=state_dir,
        policy_file=_e2e_policy(state_dir, oidc_issuer),
        progress=sys.stderr,
        log_stream=capture,
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
        )
    finally:
        stack.stop()
