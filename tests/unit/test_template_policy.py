"""The live policy's part of template.yaml: the AppConfig resources `bulwark policy push` looks up by name, the JSON
Schema validator (a copy of the pydantic model's schema, which must not drift), and the three functions that read the
policy: each names the profile, bounds its cache period, and may read that one profile and nothing else of AppConfig.
"""

from __future__ import annotations

import json
from typing import Any

import fastjsonschema
import pytest
import yaml

from bulwark.policy import default_policy_path
from bulwark.settings import POLICY_TTL_BOUNDS, Settings
from bulwark_dev.appconfig_schema import MAX_VALIDATOR_BYTES, appconfig_policy_schema, appconfig_policy_schema_text
from bulwark_dev.policy_push import policy_names
from tests.unit.test_template import resources, statements, template  # noqa: F401 - the module's fixture

POLICY_READERS = {
    "AuthorizerFunction": "AuthorizerRole",
    "ValidatorFunction": "ValidatorRole",
    "InvokerFunction": "InvokerRole",
}
CONFIGURATION_ARN = (
    "arn:${AWS::Partition}:appconfig:${AWS::Region}:${AWS::AccountId}:application/${PolicyApplication}"
    "/environment/${PolicyEnvironment}/configuration/${PolicyProfile}"
)


def _one(template: dict[str, Any], kind: str) -> dict[str, Any]:  # noqa: F811
    (resource,) = resources(template, kind).values()
    return dict(resource["Properties"])


def test_the_profile_validator_is_the_policy_models_schema(template: dict[str, Any]) -> None:  # noqa: F811
    (validator,) = _one(template, "AWS::AppConfig::ConfigurationProfile")["Validators"]
    assert validator["Type"] == "JSON_SCHEMA"
    assert json.loads(validator["Content"]) == appconfig_policy_schema(), (
        "template.yaml's validator differs from the policy model: paste `bulwark policy schema --appconfig` into it"
    )
    assert len(validator["Content"].encode()) <= MAX_VALIDATOR_BYTES


def test_the_validator_accepts_the_shipped_policy_and_refuses_a_typo() -> None:
    check = fastjsonschema.compile(json.loads(appconfig_policy_schema_text()))
    shipped = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    check(json.loads(json.dumps(shipped)))
    shipped["roles"]["developer"]["limits"]["requests_per_minnute"] = 5
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        check(shipped)
    shipped["roles"]["developer"]["limits"] = {"requests_per_minute": 0}  # gt=0 in the model: exclusiveMinimum
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        check(shipped)


def test_the_names_push_looks_up_are_the_templates(template: dict[str, Any]) -> None:  # noqa: F811
    names = policy_names("STACK")
    given = {
        "AWS::AppConfig::Application": names.application,
        "AWS::AppConfig::Environment": names.environment,
        "AWS::AppConfig::ConfigurationProfile": names.profile,
        "AWS::AppConfig::DeploymentStrategy": names.strategy,
    }
    for kind, name in given.items():
        written = _one(template, kind)["Name"]
        as_text = written.get("Fn::Sub", written) if isinstance(written, dict) else written
        assert as_text.replace("${AWS::StackName}", "STACK") == name, kind
    profile = _one(template, "AWS::AppConfig::ConfigurationProfile")
    assert (profile["LocationUri"], profile["Type"]) == ("hosted", "AWS::AppConfig::FreeForm")
    strategy = _one(template, "AWS::AppConfig::DeploymentStrategy")
    # The functions validate each version themselves; a slow rollout would only delay a fix.
    assert strategy["GrowthFactor"] == 100 and strategy["FinalBakeTimeInMinutes"] == 0


def test_each_policy_reader_names_the_profile_and_a_bounded_cache_period(template: dict[str, Any]) -> None:  # noqa: F811
    for function in POLICY_READERS:
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["BULWARK_POLICY_APPCONFIG_APPLICATION"] == {"Ref": "PolicyApplication"}
        assert env["BULWARK_POLICY_APPCONFIG_ENVIRONMENT"] == {"Ref": "PolicyEnvironment"}
        assert env["BULWARK_POLICY_APPCONFIG_PROFILE"] == {"Ref": "PolicyProfile"}
        ttl = int(env["BULWARK_POLICY_TTL_SECONDS"])
        assert POLICY_TTL_BOUNDS[0] <= ttl <= 45, "a pushed policy must be in force within a minute"
        assert Settings.from_env({"BULWARK_POLICY_TTL_SECONDS": str(ttl)}).policy_ttl_seconds == ttl
    janitor = template["Resources"]["JanitorFunction"]["Properties"]["Environment"]["Variables"]
    assert not any(k.startswith("BULWARK_POLICY_") for k in janitor), "the janitor does not read the policy"


def test_only_the_policy_readers_may_read_it_and_only_that_profile(template: dict[str, Any]) -> None:  # noqa: F811
    for name, role in resources(template, "AWS::IAM::Role").items():
        found = [s for s in statements(role) if any(str(a).startswith("appconfig:") for a in _actions(s))]
        if name not in POLICY_READERS.values():
            assert not found, f"{name} may use AppConfig"
            continue
        (statement,) = found
        assert sorted(_actions(statement)) == [
            "appconfig:GetLatestConfiguration",
            "appconfig:StartConfigurationSession",
        ]
        assert statement["Resource"] == {"Fn::Sub": CONFIGURATION_ARN}


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_the_cache_period_is_bounded_and_local_runs_may_go_lower() -> None:
    assert Settings.from_env({}).policy_ttl_seconds == 45
    assert Settings.from_env({"BULWARK_POLICY_TTL_SECONDS": "1"}).policy_ttl_seconds == POLICY_TTL_BOUNDS[0]
    assert Settings.from_env({"BULWARK_POLICY_TTL_SECONDS": "99999"}).policy_ttl_seconds == POLICY_TTL_BOUNDS[1]
    assert Settings.from_env({"BULWARK_POLICY_TTL_SECONDS": "1", "BULWARK_LOCAL": "1"}).policy_ttl_seconds == 1
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env({"BULWARK_POLICY_APPCONFIG_APPLICATION": "a"})
