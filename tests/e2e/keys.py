"""Creating keys on the e2e stack through the real CLI (`bulwark keys ... --json`), as a developer would."""

from __future__ import annotations

import io
import json
import os
from typing import Any
from unittest import mock

from bulwark_dev.cli import main


def cli(env: dict[str, str], *args: str) -> Any:
    out = io.StringIO()
    with mock.patch.dict(os.environ, env, clear=False):
        code = main([*args, "--json"], out=out)
    assert code == 0, f"bulwark {' '.join(args)} exited {code}"
    return json.loads(out.getvalue())


def create_key(env: dict[str, str], role: str = "developer", *extra: str) -> tuple[str, str]:
    data = cli(env, "keys", "create", "--name", "e2e", "--role", role, *extra)
    return data["api_key"], data["key_id"]
