"""Helpers for the fault-injection and fuzz tests: keys on a running stack, and private stacks with their own policy.

The shared session stack (conftest.py ``local_stack``) is left alone: a test that stops DynamoDB Local or breaks the
upstream gets its own `LocalStack`, started on free ports and stopped by PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bulwark.auth.key_admin import KeyAdmin
from bulwark.auth.pepper import Pepper
from bulwark.settings import Settings
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeysTable
from bulwark_dev.local.dynamodb_local import local_dynamodb_client
from bulwark_dev.local.stack import LocalStack
from tests.e2e.conftest import LineCapture

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "layers/bulwark/bulwark/policy.yaml"


def create_key(env: dict[str, str], *, role: str = "developer", name: str = "test") -> str:
    """A new API key on the stack whose CLI environment is `env` (the secret, shown once)."""
    cfg = Settings.from_env(env)
    ddb = local_dynamodb_client(env["AWS_ENDPOINT_URL_DYNAMODB"])
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
def private_stack(tmp: Path, policy: Path | None = None) -> Iterator[tuple[LocalStack, LineCapture]]:
    """A whole local stack for one test module, on free ports, stopped (by PID) at the end."""
    lines = LineCapture()
    stack = LocalStack(
        project_root=ROOT, port=0, policy_file=policy, state_dir=tmp / "state", progress=None, log_stream=lines
    )
    stack.start()
    try:
        yield stack, lines
    finally:
        stack.stop()
