"""The live policy: the AppConfigData provider (bulwark.aws.appconfig) and the policy source's rule
(bulwark.policy_source) against a loopback server speaking AppConfigData's wire protocol
(tests/integration/wire/appconfigdata.py).

What is real: the lean signed client (the server checks each SigV4 signature, query string included), Powertools'
parameters cache, the stand-in's sessions and single-use tokens, the policy files on disk. Faults are scripted replies.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulwark.aws.appconfig import AppConfigDataClient, AppConfigPolicyProvider, GetParameterError
from bulwark.aws.sigv4 import Credentials, CredentialSource
from bulwark.aws.wire import Endpoint
from bulwark.policy import PolicyError, default_policy_path
from bulwark.policy_source import PolicySource
from bulwark.settings import Settings
from bulwark_dev.local.appconfig_service import AppConfigStandIn
from tests.integration.wire import appconfigdata
from tests.integration.wire.appconfigdata import APPLICATION, ENVIRONMENT, PROFILE, SECRET
from tests.integration.wire.server import Reply, WireServer

pytestmark = pytest.mark.integration


@pytest.fixture
def service() -> AppConfigStandIn:
    return appconfigdata.stand_in()


@pytest.fixture
def server(service: AppConfigStandIn) -> Iterator[WireServer]:
    wire = appconfigdata.make(service)
    yield wire
    wire.stop()


def _provider(url: str) -> AppConfigPolicyProvider:
    client = AppConfigDataClient(
        service="appconfig",
        endpoint=Endpoint.parse(url),
        region="us-east-1",
        credentials=CredentialSource(lambda: Credentials("AKIDTEST", SECRET)),
        connect_timeout=1.0,
        read_timeout=2.0,
        max_attempts=2,
    )
    return AppConfigPolicyProvider(APPLICATION, ENVIRONMENT, client, poll_seconds=45)


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    return data


def _with_rpm(rpm: int) -> bytes:
    data = _shipped()
    data["roles"]["developer"]["limits"]["requests_per_minute"] = rpm
    return json.dumps(data).encode()


# ------------------------------------------------------------------------------------------------------- provider


def test_first_read_starts_a_session_and_each_poll_uses_the_last_token(
    server: WireServer, service: AppConfigStandIn
) -> None:
    appconfigdata.deploy(service, b'{"v": 1}', label="first")
    provider = _provider(server.url)
    assert provider.get(PROFILE, max_age=60) == b'{"v": 1}'
    assert provider.version_label == "first"
    assert provider.get(PROFILE, max_age=60) == b'{"v": 1}'  # Powertools' cache: no call
    assert [r.method for r in server.requests] == ["POST", "GET"]
    provider.store.clear()
    assert provider.get(PROFILE, max_age=60) == b'{"v": 1}'  # unchanged: an empty body, the last document kept
    start, first, second = server.requests
    assert start.path == "/configurationsessions"
    assert start.json() == {
        "ApplicationIdentifier": APPLICATION,
        "EnvironmentIdentifier": ENVIRONMENT,
        "ConfigurationProfileIdentifier": PROFILE,
        "RequiredMinimumPollIntervalInSeconds": 45,
    }
    assert first.path.startswith("/configuration?configuration_token=") and first.path != second.path


def test_a_new_deployment_is_seen_at_the_next_poll(server: WireServer, service: AppConfigStandIn) -> None:
    appconfigdata.deploy(service, b'{"v": 1}')
    provider = _provider(server.url)
    assert provider.get(PROFILE, max_age=60) == b'{"v": 1}'
    appconfigdata.deploy(service, b'{"v": 2}')
    assert provider.get(PROFILE, max_age=60) == b'{"v": 1}'  # cached for max_age
    assert provider.get(PROFILE, max_age=60, force_fetch=True) == b'{"v": 2}'


def test_nothing_deployed_reads_as_empty(server: WireServer) -> None:
    assert _provider(server.url).get(PROFILE, max_age=60) == b""


def test_a_missing_profile_reads_as_empty(server: WireServer) -> None:
    server.script(Reply.json({"Message": "nope"}, 404, {"x-amzn-ErrorType": "ResourceNotFoundException"}))
    assert _provider(server.url).get(PROFILE, max_age=60) == b""


def test_a_refused_token_starts_a_new_session(server: WireServer, service: AppConfigStandIn) -> None:
    appconfigdata.deploy(service, b'{"v": 1}')
    provider = _provider(server.url)
    assert provider.get(PROFILE, max_age=60) == b'{"v": 1}'
    expired = Reply.json({"Message": "expired"}, 400, {"x-amzn-ErrorType": "BadRequestException"})
    server.script(expired)
    assert provider.get(PROFILE, max_age=60, force_fetch=True) == b'{"v": 1}'
    assert [r.method for r in server.requests] == ["POST", "GET", "GET", "POST", "GET"]


def test_access_denied_and_faults_are_errors_not_empty_documents(server: WireServer) -> None:
    denied = Reply.json({"Message": "no"}, 403, {"x-amzn-ErrorType": "AccessDeniedException"})
    server.script(denied)
    with pytest.raises(GetParameterError):
        _provider(server.url).get(PROFILE, max_age=60)
    server.script(Reply(500), Reply(500))  # retried once, then given up
    with pytest.raises(GetParameterError):
        _provider(server.url).get(PROFILE, max_age=60)


# -------------------------------------------------------------------------------------------------- policy source


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(_shipped()), encoding="utf-8")
    return path


def _source(url: str) -> PolicySource:
    cfg = Settings(policy_appconfig=(APPLICATION, ENVIRONMENT, PROFILE), policy_ttl_seconds=1)
    return PolicySource(cfg, _provider(url))


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def _metric_names(out: str) -> list[str]:
    return [m["Name"] for doc in _emf(out) for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]


def test_appconfig_wins_once_deployed_and_a_change_is_announced(
    server: WireServer, service: AppConfigStandIn, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _source(server.url)
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 600  # the file
    appconfigdata.deploy(service, _with_rpm(7), label="rpm-7")
    source._provider.store.clear()  # type: ignore[union-attr]  # the cache period, elapsed
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7
    (update,) = _emf(capsys.readouterr().out)
    assert update["PolicyUpdated"] == [1.0] and update["policy_version"] == "rpm-7"


def test_a_bad_document_is_never_used_and_the_last_good_stays(
    server: WireServer,
    service: AppConfigStandIn,
    policy_file: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _source(server.url)
    appconfigdata.deploy(service, _with_rpm(7))
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7
    capsys.readouterr()
    bad = json.loads(_with_rpm(8))
    bad["roles"]["developer"]["models"] = ["model-that-is-not-there"]  # passes AppConfig's schema, not the model
    bad["network"]["allow_cidrs"] = ["198.51.100.77/32"]  # something of the document that must not reach the log
    for document in (json.dumps(bad).encode(), b"{not json", json.dumps({**bad, "roles": "x"}).encode()):
        appconfigdata.deploy(service, document)
        source._provider.store.clear()  # type: ignore[union-attr]
        with caplog.at_level(logging.INFO):
            assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7
        source._provider.store.clear()  # type: ignore[union-attr]
        source.current(str(policy_file))  # the same bad document again: refused once, not at every poll
    out = capsys.readouterr().out
    assert _metric_names(out) == ["PolicyLoadFailed"] * 3
    refusals = [r for r in caplog.records if r.getMessage() == "new policy refused, the policy in force is kept"]
    assert len(refusals) == 3
    assert [getattr(r, "reason", "") for r in refusals][1] == "not JSON"
    assert "198.51.100.77" not in out + caplog.text and "model-that-is-not-there" not in out + caplog.text


def test_appconfig_unreachable_at_a_cold_start_refuses_rather_than_falls_back(
    server: WireServer, service: AppConfigStandIn, policy_file: Path
) -> None:
    appconfigdata.deploy(service, _with_rpm(7))
    denied = Reply.json({"Message": "no"}, 403, {"x-amzn-ErrorType": "AccessDeniedException"})
    server.script(denied)
    source = _source(server.url)
    for _ in range(2):  # and not the layer's file at the next request either, while it waits to retry
        with pytest.raises(PolicyError):
            source.current(str(policy_file))
    assert len(server.requests) == 1
    source._retry_at = 0.0  # the retry interval, elapsed
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7


def test_appconfig_unreachable_later_keeps_the_policy_in_force(
    server: WireServer, service: AppConfigStandIn, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    appconfigdata.deploy(service, _with_rpm(7))
    source = _source(server.url)
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7
    server.script(Reply(503), Reply(503))
    source._provider.store.clear()  # type: ignore[union-attr]
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7
    assert _metric_names(capsys.readouterr().out) == ["PolicyLoadFailed"]
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 7  # no call: backing off
    assert len(server.requests) == 4


# --------------------------------------------------------------------------------------------------------- the file


def test_a_bad_file_edit_keeps_the_last_good_file_policy(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = PolicySource(Settings())
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 600
    before = policy_file.stat().st_mtime_ns
    policy_file.write_text("roles: [not, a, mapping\n", encoding="utf-8")
    os.utime(policy_file, ns=(before + 1_000_000, before + 1_000_000))
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 600
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 600
    assert _metric_names(capsys.readouterr().out) == ["PolicyLoadFailed"]
    data = _shipped()
    data["roles"]["developer"]["limits"]["requests_per_minute"] = 5
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    os.utime(policy_file, ns=(before + 2_000_000, before + 2_000_000))
    assert source.current(str(policy_file)).roles["developer"].limits.requests_per_minute == 5
    assert _metric_names(capsys.readouterr().out) == ["PolicyUpdated"]


def test_no_good_policy_at_all_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "policy.yaml"
    broken.write_text("version: 2\n", encoding="utf-8")
    source = PolicySource(Settings())
    for _ in range(2):
        with pytest.raises(PolicyError):
            source.current(str(broken))
    with pytest.raises(PolicyError):
        PolicySource(Settings()).current(str(tmp_path / "missing.yaml"))


def test_the_provider_keeps_the_sdk_out_of_the_function() -> None:
    """Powertools' parameters package imports boto3 for its own providers; the function's first policy read must not."""
    probe = (
        "import sys, bulwark.policy_source, bulwark.aws.appconfig as a;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'boto3' or m.startswith(('botocore.session',"
        " 'botocore.client'))), issubclass(a.AppConfigPolicyProvider, a.BaseProvider))"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert answer.stdout.split() == ["[]", "True"]
