"""Helpers shared by the monitoring e2e tests: make keys with the real CLI, send raw HTTP, wait for log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests


def cli(env: dict[str, str], *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The `bulwark` command line, as a user runs it (its own process, the stack's CLI environment)."""
    return subprocess.run(
        [sys.executable, "-m", "bulwark_dev.cli", *argv],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def create_key(env: dict[str, str], name: str, role: str = "developer", *extra: str) -> dict[str, Any]:
    done = cli(env, "keys", "create", "--name", name, "--role", role, "--json", *extra)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def post_chat(
    base_url: str, headers: dict[str, str], content: str, *, query: str = "", body: str | None = None
) -> requests.Response:
    payload = (
        body
        if body is not None
        else json.dumps({"model": "demo-echo", "messages": [{"role": "user", "content": content}], "max_tokens": 32})
    )
    return requests.post(
        f"{base_url}/v1/chat/completions{query}",
        data=payload.encode(),
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def wait_for_audit(log_file: Path, request_ids: set[str], timeout: float = 15.0) -> list[dict[str, Any]]:
    """The audit records of these requests, once all of them are in the session log (workers write asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, dict[str, Any]] = {}
        for line in log_file.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            audit = entry.get("audit") if isinstance(entry, dict) else None
            if isinstance(audit, dict) and audit.get("request_id") in request_ids:
                found[audit["request_id"]] = audit
        if set(found) == request_ids or time.monotonic() > deadline:
            missing = request_ids - set(found)
            assert not missing, f"no audit record for {sorted(missing)}"
            return list(found.values())
        time.sleep(0.2)
