"""`bulwark policy push` against a server speaking AppConfig's REST-JSON (the local stack's stand-in behind a SigV4
check, tests/integration/wire/appconfigdata.py), through boto3 as a person's shell runs it: what it prints when it
works, and the next step it names when it cannot (no credentials, no such stack, a policy AppConfig refuses).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import yaml

from bulwark.policy import default_policy_path
from bulwark_dev.appconfig_schema import appconfig_policy_schema_text
from bulwark_dev.cli import main
from bulwark_dev.local.appconfig_service import AppConfigResources, AppConfigStandIn, Named, Profile, Strategy
from tests.integration.wire import appconfigdata
from tests.integration.wire.appconfigdata import APPLICATION, ENVIRONMENT, PROFILE, SECRET, STRATEGY
from tests.integration.wire.server import WireServer

pytestmark = pytest.mark.integration
STACK = "bulwark-test"  # the wire stand-in's application is named as template.yaml names a stack's: <stack>-policy


@pytest.fixture
def service() -> AppConfigStandIn:
    validator = (("JSON_SCHEMA", appconfig_policy_schema_text()),)  # as template.yaml's profile has it
    resources = AppConfigResources(
        Named(APPLICATION, f"{STACK}-policy"),
        (Named(ENVIRONMENT, "live"),),
        (Profile(PROFILE, "policy", validator),),
        (Strategy(STRATEGY, f"{STACK}-policy-all-at-once", 0, 0, 100.0),),
    )
    return AppConfigStandIn([resources])


@pytest.fixture
def server(service: AppConfigStandIn) -> Iterator[WireServer]:
    wire = appconfigdata.make(service)
    yield wire
    wire.stop()


def _push(url: str, path: Path, *extra: str, stack: str = STACK, credentials: bool = True) -> tuple[int, str, str]:
    env = {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if credentials:
        env |= {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": SECRET}
    out, err = io.StringIO(), io.StringIO()
    args = ["policy", "push", "--stack", stack, str(path), "--endpoint-url", url, "--region", "us-east-1", *extra]
    with mock.patch.dict(os.environ, env), mock.patch.object(sys, "stderr", err):
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            if not credentials:
                os.environ.pop(name, None)
        code = main(args, out=out)
    return code, out.getvalue(), err.getvalue()


def _file(tmp_path: Path, rpm: int = 7) -> Path:
    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["roles"]["developer"]["limits"]["requests_per_minute"] = rpm
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_push_uploads_deploys_and_says_so(server: WireServer, tmp_path: Path) -> None:
    code, out, err = _push(server.url, _file(tmp_path), "--wait")
    assert code == 0, err
    assert "hosted configuration version 1" in out and "Deployment 1: COMPLETE" in out
    code, out, _ = _push(server.url, _file(tmp_path, 8), "--json")
    result = json.loads(out)
    assert (code, result["version"], result["deployment"], result["state"]) == (0, 2, 2, "COMPLETE")
    uploaded = [r for r in server.requests if r.path.endswith("/hostedconfigurationversions")]
    assert json.loads(uploaded[-1].body)["roles"]["developer"]["limits"]["requests_per_minute"] == 8


def test_an_unknown_stack_names_the_next_step(server: WireServer, tmp_path: Path) -> None:
    code, _, err = _push(server.url, _file(tmp_path), stack="not-this-one")
    assert code == 1
    assert "no AppConfig application named 'not-this-one-policy'" in err and "sam deploy" in err


def test_no_credentials_names_the_next_step(server: WireServer, tmp_path: Path) -> None:
    code, _, err = _push(server.url, _file(tmp_path), credentials=False)
    assert code == 1 and "No AWS credentials" in err
    assert server.requests == []


def test_a_policy_only_a_local_stack_accepts_is_refused_for_a_deployed_one(tmp_path: Path) -> None:
    data = yaml.safe_load(_file(tmp_path).read_text(encoding="utf-8"))
    data["models"]["plain"] = {"upstream": {"kind": "openai", "url": "http://127.0.0.1:9/v1"}}
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, _, err = _push("https://appconfig.example.invalid", path)  # never reached: refused before any call
    assert code == 1 and "plain http" in err


def test_a_version_appconfigs_validator_refuses_is_reported_with_its_findings(
    service: AppConfigStandIn, tmp_path: Path
) -> None:
    # A stack whose validator asks for more than this CLI checks (a template newer than the CLI, say).
    app = service._apps[APPLICATION]
    (profile,) = app.profiles
    strict = Profile(profile.id, profile.name, (("JSON_SCHEMA", json.dumps({"required": ["never_there"]})),))
    strict_service = AppConfigStandIn(
        [AppConfigResources(app.application, app.environments, (strict,), app.strategies)]
    )
    wire = appconfigdata.make(strict_service)
    try:
        code, out, err = _push(wire.url, _file(tmp_path))
    finally:
        wire.stop()
    assert code == 1
    assert "AppConfig refused the policy: BadRequestException" in err and "never_there" in err
    assert "Nothing was deployed" in err and "Uploaded" in out
