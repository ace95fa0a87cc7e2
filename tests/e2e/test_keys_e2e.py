"""Key lifecycle through the CLI against the running local stack: create, list, show, rotate with grace, revoke."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.e2e.keys import cli, create_key

pytestmark = pytest.mark.e2e
CHAT = {"model": "demo-echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def chat(local_stack: Any, key: str) -> requests.Response:
    return requests.post(
        f"{local_stack.base_url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def test_list_and_show_never_reveal_secrets(local_stack: Any) -> None:
    key, key_id = create_key(local_stack.env, "developer", "--expires-in", "30d", "--allow-cidr", "127.0.0.0/8")
    listed = cli(local_stack.env, "keys", "list")
    assert key_id in {k["key_id"] for k in listed}
    shown = cli(local_stack.env, "keys", "show", key_id)
    assert shown["expires_at"] and shown["allow_cidrs"] == ["127.0.0.0/8"]
    assert key not in str(listed) + str(shown) and "hash" not in str(shown["secrets"])


def test_rotation_keeps_both_secrets_working_during_grace(local_stack: Any) -> None:
    old, key_id = create_key(local_stack.env)
    rotated = cli(local_stack.env, "keys", "rotate", key_id, "--grace", "1h")
    new = rotated["api_key"]
    assert rotated["key_id"] == key_id and new != old
    assert chat(local_stack, new).status_code == 200
    assert chat(local_stack, old).status_code == 200


def test_the_pepper_rotates_without_invalidating_issued_keys(local_stack: Any) -> None:
    old, old_id = create_key(local_stack.env)
    assert chat(local_stack, old).status_code == 200  # the authorizer has the current pepper version cached
    rotated = cli(local_stack.env, "keys", "rotate-pepper")
    assert rotated["current"] >= 2 and rotated["current"] - 1 in rotated["versions"]
    new, new_id = create_key(local_stack.env)
    assert chat(local_stack, new).status_code == 200  # hashed with the new version, picked up at once
    assert chat(local_stack, old).status_code == 200  # still verified with the version it was made with
    status = cli(local_stack.env, "keys", "rotate-pepper", "--status")
    assert new_id in status["in_use"][str(rotated["current"])]
    assert old_id not in status["in_use"][str(rotated["current"])]


def test_revocation_stops_model_calls_at_once(local_stack: Any) -> None:
    key, key_id = create_key(local_stack.env)
    assert chat(local_stack, key).status_code == 200  # the authorizer now caches an allow for this key
    cli(local_stack.env, "keys", "revoke", key_id)
    r = chat(local_stack, key)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "revoked_credentials"


def test_key_from_a_network_outside_its_allow_list_is_refused(local_stack: Any) -> None:
    key, _ = create_key(local_stack.env, "developer", "--allow-cidr", "192.0.2.0/24")
    r = chat(local_stack, key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed"


def test_canary_key_is_refused_like_any_wrong_key(local_stack: Any) -> None:
    key, _ = create_key(local_stack.env, "developer", "--canary")
    r = chat(local_stack, key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    deadline = time.monotonic() + 5  # the worker's log lines reach the stack's console asynchronously
    while not any("canary key presented" in line for line in local_stack.log_lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("canary key presented" in line for line in local_stack.log_lines)


def test_the_cli_finds_the_running_local_stack_from_another_terminal(local_stack: Any, tmp_path: Any) -> None:
    """README: `bulwark keys ...` in another terminal, inside the project, talks to the running `bulwark local`."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    state = tmp_path / ".bulwark"
    state.mkdir()
    shutil.copy(local_stack.stack.state_dir / "local.json", state / "local.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BULWARK_", "AWS_"))}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bulwark_dev.cli",
            "keys",
            "create",
            "--name",
            "other-terminal",
            "--role",
            "partner",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert chat(local_stack, created["api_key"]).status_code == 200
