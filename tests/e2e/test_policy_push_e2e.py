"""A policy change without a redeploy, through `bulwark local`: `bulwark policy push --stack bulwark-local` deploys to
the local AppConfig stand-in, and the running functions take it at their next poll, without a restart.

A stack of its own (the session's shared stack keeps the file policy), with the functions' cache period cut to 1 s
(BULWARK_POLICY_TTL_SECONDS; 45 s as deployed, measured by bench/policy_push_latency.py). Proven here:

- a role's limit pushed with the CLI is enforced within seconds, and each function logs the new version;
- a bad file is refused by the CLI, with `bulwark policy check`'s messages and exit status, and nothing is deployed;
- a document forced past the CLI is refused by the profile's JSON Schema validator in the stand-in, as AWS does;
- one that passes the schema but not the model's checks reaches the functions, which keep the last good policy and
  say so (PolicyLoadFailed);
- the functions' own credentials cannot push (AccessDenied: only the operator identity may).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import requests
import yaml
from botocore.exceptions import ClientError

from bulwark.policy import default_policy_path
from bulwark_dev.cli import main
from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from bulwark_dev.local.stack import LocalStack
from tests.e2e.conftest import LineCapture
from tests.e2e.keys import create_key

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STACK = "bulwark-local"
CHAT = {"model": "demo-echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


class PolicyStack:
    def __init__(self, stack: LocalStack, work: Path, capture: LineCapture) -> None:
        self.stack, self.work, self.capture = stack, work, capture
        self.env = stack.cli_environment()

    def push(self, document: dict[str, Any], *extra: str) -> tuple[int, str, str]:
        """`bulwark policy push` as a person runs it from the project folder; (exit status, stdout, stderr)."""
        path = self.work / f"policy-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return self.cli("policy", "push", "--stack", STACK, str(path), *extra)

    def cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, self.env), mock.patch.object(sys, "stderr", err):
            cwd = Path.cwd()
            os.chdir(self.work)
            try:
                code = main(list(args), out=out)
            finally:
                os.chdir(cwd)
        return code, out.getvalue(), err.getvalue()

    def rpm_in_force(self, rpm: int) -> bool:
        """A fresh key's first `rpm` requests pass and the next is refused for requests per minute."""
        key, _ = create_key(self.env, "developer")
        headers = {"Authorization": f"Bearer {key}"}
        url = f"{self.stack.base_url}/v1/chat/completions"
        codes = [requests.post(url, json=CHAT, headers=headers, timeout=30) for _ in range(rpm + 1)]
        refused = codes[-1].status_code == 429 and codes[-1].json()["error"]["code"] == "requests_per_minute_exceeded"
        return all(c.status_code == 200 for c in codes[:-1]) and refused

    def wait_for_rpm(self, rpm: int, within: float = 20.0) -> float:
        started = time.monotonic()
        while not self.rpm_in_force(rpm):
            assert time.monotonic() - started < within, f"requests_per_minute {rpm} not in force after {within} s"
            time.sleep(0.3)
        return time.monotonic() - started

    def appconfig(self, as_function: str | None = None) -> Any:
        """A boto3 AppConfig client on the local endpoint: the operator's credentials, or a function's."""
        assert self.stack.aws is not None
        if as_function is None:
            keys = (self.env["BULWARK_OPERATOR_ACCESS_KEY_ID"], self.env["BULWARK_OPERATOR_SECRET_ACCESS_KEY"])
        else:
            own = self.stack.aws.credentials_for(as_function)
            keys = (own["AWS_ACCESS_KEY_ID"], own["AWS_SECRET_ACCESS_KEY"])
        return boto3.client(
            "appconfig",
            endpoint_url=self.env["AWS_ENDPOINT_URL_APPCONFIG"],
            region_name="us-east-1",
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
        )

    def ids(self) -> dict[str, str]:
        client = self.appconfig()
        (app,) = [a["Id"] for a in client.list_applications()["Items"] if a["Name"] == f"{STACK}-policy"]
        (env,) = [e["Id"] for e in client.list_environments(ApplicationId=app)["Items"]]
        (profile,) = [p["Id"] for p in client.list_configuration_profiles(ApplicationId=app)["Items"]]
        strategy = next(s["Id"] for s in client.list_deployment_strategies()["Items"] if s["Name"].startswith(STACK))
        return {"ApplicationId": app, "EnvironmentId": env, "ConfigurationProfileId": profile, "Strategy": strategy}

    def force(self, content: bytes) -> Any:
        """Past the CLI: a hosted version and a deployment straight through AppConfig's API."""
        client, ids = self.appconfig(), self.ids()
        version = client.create_hosted_configuration_version(
            ApplicationId=ids["ApplicationId"],
            ConfigurationProfileId=ids["ConfigurationProfileId"],
            Content=content,
            ContentType="application/json",
        )["VersionNumber"]
        return client.start_deployment(
            ApplicationId=ids["ApplicationId"],
            EnvironmentId=ids["EnvironmentId"],
            DeploymentStrategyId=ids["Strategy"],
            ConfigurationProfileId=ids["ConfigurationProfileId"],
            ConfigurationVersion=str(version),
        )

    def lines(self, text: str) -> list[str]:
        return [line for line in self.capture.lines if text in line]


@pytest.fixture(scope="module")
def policy_stack(tmp_path_factory: pytest.TempPathFactory, shared_dynamodb: DynamoDBLocal) -> Iterator[PolicyStack]:
    work = tmp_path_factory.mktemp("policy-push")
    capture = LineCapture()
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        state_dir=work / ".bulwark",  # where the CLI finds the running stack, from the project folder (work)
        progress=sys.stderr,
        log_stream=capture,
        function_environment={"BULWARK_POLICY_TTL_SECONDS": "1"},
        dynamodb=shared_dynamodb,
    )
    stack.start()
    try:
        yield PolicyStack(stack, work, capture)
    finally:
        stack.stop()


def _policy(rpm: int) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["roles"]["developer"]["limits"]["requests_per_minute"] = rpm
    return data


def test_a_pushed_limit_is_enforced_without_a_restart(policy_stack: PolicyStack) -> None:
    assert not policy_stack.rpm_in_force(2)  # the layer's policy: 600 a minute
    code, out, err = policy_stack.push(_policy(2), "--wait")
    assert code == 0, err
    assert "Deployment 1: COMPLETE" in out
    seconds = policy_stack.wait_for_rpm(2)
    assert seconds < 10
    digest = out.split("document ", 1)[1].split(")", 1)[0].split()[0]
    taken = policy_stack.lines("new policy in force")
    assert taken and all(digest in line for line in taken)
    assert policy_stack.lines('"PolicyUpdated"')


def test_the_cli_refuses_a_bad_policy_as_policy_check_does(policy_stack: PolicyStack) -> None:
    before = len(policy_stack.lines("new policy in force"))
    bad = _policy(3)
    bad["roles"]["developer"]["limits"]["requests_per_minnute"] = 3
    path = policy_stack.work / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False), encoding="utf-8")
    pushed = policy_stack.cli("policy", "push", "--stack", STACK, str(path))
    checked = policy_stack.cli("policy", "check", "--local", str(path))
    assert pushed[0] == checked[0] == 1
    assert pushed[2] == checked[2] and "requests_per_minnute" in pushed[2]
    pushed_json = policy_stack.cli("policy", "push", "--stack", STACK, str(path), "--json")
    checked_json = policy_stack.cli("policy", "check", "--local", str(path), "--json")
    assert pushed_json[0] == 1 and json.loads(pushed_json[1]) == json.loads(checked_json[1])
    assert pushed[1] == "" and "Uploaded" not in pushed_json[1]  # refused before any call to AppConfig
    time.sleep(1.5)
    assert len(policy_stack.lines("new policy in force")) == before


def test_forced_past_the_cli_the_profile_validator_refuses(policy_stack: PolicyStack) -> None:
    bad = _policy(3)
    bad["roles"]["developer"]["limits"]["requests_per_minute"] = "many"
    with pytest.raises(ClientError) as refused:
        policy_stack.force(json.dumps(bad).encode())
    error: dict[str, Any] = dict(refused.value.response)  # AppConfig's own members beside boto3's typed ones
    assert error["Error"]["Code"] == "BadRequestException"
    assert error["Reason"] == "InvalidConfiguration"
    (problem,) = error["Details"]["InvalidConfiguration"]
    assert "requests_per_minute" in problem["Location"]


def test_a_document_that_reaches_the_functions_but_fails_their_checks_is_not_used(policy_stack: PolicyStack) -> None:
    assert policy_stack.push(_policy(3), "--wait")[0] == 0
    policy_stack.wait_for_rpm(3)
    bad = _policy(1)
    bad["roles"]["developer"]["models"] = ["no-such-model"]  # the schema cannot see it; the model's checks do
    policy_stack.force(json.dumps(bad).encode())
    deadline = time.monotonic() + 20
    while not policy_stack.lines('"PolicyLoadFailed"'):  # the functions poll when a request reads the policy
        assert policy_stack.rpm_in_force(3), "the refused policy was used"
        assert time.monotonic() < deadline, "no function reported the refused policy"
        time.sleep(0.3)
    time.sleep(1.5)  # every function's cache period, elapsed
    assert policy_stack.rpm_in_force(3)  # the last good policy, still
    refused = policy_stack.lines("new policy refused, the policy in force is kept")
    assert refused and not any("no-such-model" in line for line in refused)


def test_a_functions_credentials_cannot_push(policy_stack: PolicyStack) -> None:
    ids = policy_stack.ids()
    with pytest.raises(ClientError) as refused:
        policy_stack.appconfig(as_function="ValidatorFunction").create_hosted_configuration_version(
            ApplicationId=ids["ApplicationId"],
            ConfigurationProfileId=ids["ConfigurationProfileId"],
            Content=b"{}",
            ContentType="application/json",
        )
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
