"""`bulwark verify` against the local stack: the same command a team runs after `sam deploy`, proven here.

Given the session's local stack (the shipped policy plus an OIDC issuer), when `bulwark verify --local URL --json` runs
as a separate process with the CLI environment `bulwark local` writes, then every check passes, the JWT check included
(an access token from the stack's issuer), and the exit status is 0. A model that cannot complete fails the command,
naming the check: the suite can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from bulwark_dev.verify import ALARM_LOGICAL_ID, ALARM_METRIC, ALARM_SUFFIX
from tests.e2e.conftest import LocalStackFixture
from tests.e2e.oidc import Issuer

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHECKS = [
    "refusal.no_credential",
    "refusal.wrong_key",
    "key.create",
    "key.use",
    "completion",
    "guardrail.block",
    "refusal.invalid_json",
    "refusal.model_not_allowed",
    "jwt",
    "limits.retry_after",
    "key.revoke",
    "alarm.metric",
]


def verify(local_stack: LocalStackFixture, *extra: str) -> tuple[int, dict[str, Any]]:
    log_file = local_stack.log_file
    assert log_file is not None
    command = [sys.executable, "-m", "bulwark_dev.cli", "verify", "--local", local_stack.base_url, "--json"]
    done = subprocess.run(
        [*command, "--log-file", str(log_file), *extra],
        env=local_stack.env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_bulwark_verify_passes_every_check_against_the_local_stack(
    local_stack: LocalStackFixture, oidc_issuer: Issuer
) -> None:
    token = oidc_issuer.token(scope="openid bulwark:dev", sub="verify-1")
    status, report = verify(local_stack, "--jwt", token)
    by_name = {c["name"]: c for c in report["checks"]}
    assert [c["name"] for c in report["checks"]] == CHECKS
    failed = {n: c["detail"] for n, c in by_name.items() if c["status"] != "pass"}
    assert failed == {}, failed
    assert status == 0 and report["ok"] is True
    assert "Retry-After" in by_name["limits.retry_after"]["detail"]
    assert "bwk_" not in json.dumps(report)  # the run's key is never printed


def test_bulwark_verify_fails_and_names_the_check_when_the_model_cannot_complete(
    local_stack: LocalStackFixture,
) -> None:
    """A named model that cannot complete a chat (the policy's invoke-only legacy model): the completion check fails
    with what it saw, and the command exits 1, while the refusal checks still pass."""
    status, report = verify(local_stack, "--model", "legacy-echo")
    by_name = {c["name"]: c for c in report["checks"]}
    assert status == 1 and report["ok"] is False
    assert by_name["completion"]["status"] == "fail" and by_name["completion"]["detail"].startswith("HTTP 4")
    assert by_name["refusal.no_credential"]["status"] == "pass"
    assert by_name["jwt"]["status"] == "skip"


def test_the_metric_verify_checks_is_the_one_the_alarm_watches() -> None:
    data, matches = decode(str(ROOT / "template.yaml"))
    assert not matches and data is not None
    alarm = data["Resources"][ALARM_LOGICAL_ID]["Properties"]
    dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert (alarm["Namespace"], alarm["MetricName"], dims) == ALARM_METRIC
    assert alarm["AlarmName"] == {"Fn::Sub": "${AWS::StackName}" + ALARM_SUFFIX}
