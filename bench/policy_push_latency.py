"""Seconds from `bulwark policy push` returning to the new limit enforced, with the shipped cache period (45 s).

A local stack with the template as it is (BULWARK_POLICY_TTL_SECONDS 45, the deployed value): each round pushes the
shipped policy with the developer role's requests_per_minute set to a new value, then probes every 0.5 s with a fresh
key until exactly that many requests pass and the next is refused. The functions poll AppConfig when a request reads
the policy and their cache period has run out, so a round measures where in that period the push landed: anything
from 0 to 45 s plus one probe. Target: at most 60 s in every round.

Run: `python bench/policy_push_latency.py [--rounds 3]` (about a minute per round).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import requests
import yaml
from _common import ROOT, chat_body, create_key, say, table, verdict

TARGET_SECONDS = 60.0


def _in_force(stack: Any, env: dict[str, str], rpm: int) -> bool:
    key = create_key(env, stack.dynamodb_endpoint)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{stack.base_url}/v1/chat/completions"
    codes = [requests.post(url, data=chat_body(), headers=headers, timeout=30).status_code for _ in range(rpm + 1)]
    return codes[:-1] == [200] * rpm and codes[-1] == 429


def _push(work: Path, env: dict[str, str], rpm: int) -> None:
    from bulwark.policy import default_policy_path
    from bulwark_dev.cli import main

    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["roles"]["developer"]["limits"]["requests_per_minute"] = rpm
    path = work / f"policy-{rpm}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    cwd = Path.cwd()
    os.chdir(work)  # the CLI finds the running stack in ./.bulwark, as from a project folder
    try:
        with mock.patch.dict(os.environ, env):
            code = main(["policy", "push", "--stack", "bulwark-local", str(path), "--wait"], out=io.StringIO())
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"bulwark policy push exited {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from bulwark_dev.local.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="bulwark-push-") as tmp:
        work = Path(tmp)
        stack = LocalStack(project_root=ROOT, port=0, state_dir=work / ".bulwark", progress=None, log_stream=None)
        stack.start()
        try:
            env = stack.cli_environment()
            assert _in_force(stack, env, 600) is False  # warm: every function has read the policy once
            rows = []
            for round_number in range(1, args.rounds + 1):
                rpm = 2 + round_number
                _push(work, env, rpm)
                pushed = time.monotonic()
                while not _in_force(stack, env, rpm):
                    if time.monotonic() - pushed > 2 * TARGET_SECONDS:
                        raise SystemExit(f"round {round_number}: not in force after {2 * TARGET_SECONDS:.0f} s")
                    time.sleep(0.5)
                seconds = time.monotonic() - pushed
                say(f"round {round_number}: requests_per_minute {rpm} in force after {seconds:.1f} s")
                rows.append((round_number, rpm, f"{seconds:.1f}", verdict(seconds <= TARGET_SECONDS)))
        finally:
            stack.stop()
    sys.stdout.write(table(("round", "requests_per_minute pushed", "push to in force, s", "<= 60 s"), rows) + "\n")


if __name__ == "__main__":
    main()
