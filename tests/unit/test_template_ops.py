"""The security review's template findings (issue 16 items 5, 7, 8), asserted on template.yaml as CloudFormation reads.

Alarms: what each one watches (the e2e side, tests/e2e/test_alarms_e2e.py, drives every metric named here). WAF: which
rules block and which count. TLS, execution logs, the KMS key policy and the per-stack resource names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("AuthorizerFunction", "ValidatorFunction", "InvokerFunction", "JanitorFunction")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data, matches = decode(str(ROOT / "template.yaml"))
    assert not matches, matches
    assert data is not None
    return dict(data)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res.get("Type") == kind}


def watched(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(namespace, metric, dimensions) of every metric an alarm reads, single-metric or metric math."""
    props = alarm["Properties"]
    if "MetricName" in props:
        dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
        return [(props["Namespace"], props["MetricName"], dims)]
    found = []
    for query in props["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            found.append((metric["Namespace"], metric["MetricName"], dims))
    return found


# ---------------------------------------------------------------------------------------------------------- alarms


def test_what_breaks_has_an_alarm(template: dict[str, Any]) -> None:
    """API 5xx rate, each function's Errors and Throttles, the DLQ depth and the authorizer's dependency failures."""
    metrics = {
        (ns, name, json.dumps(dims, sort_keys=True))
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
        for ns, name, dims in watched(alarm)
    }
    api = json.dumps({"ApiName": {"Fn::Sub": "${AWS::StackName}-api"}, "Stage": {"Ref": "StageName"}}, sort_keys=True)
    assert ("AWS/ApiGateway", "5XXError", api) in metrics
    assert ("AWS/ApiGateway", "Count", api) in metrics
    for function in FUNCTIONS:
        dims = json.dumps({"FunctionName": {"Ref": function}}, sort_keys=True)
        assert ("AWS/Lambda", "Errors", dims) in metrics, function
        assert ("AWS/Lambda", "Throttles", dims) in metrics, function
    dlq = json.dumps({"QueueName": {"Fn::GetAtt": ["JanitorDeadLetterQueue", "QueueName"]}}, sort_keys=True)
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq) in metrics
    authz = json.dumps({"service": "bulwark-authorizer"}, sort_keys=True)
    assert ("Bulwark", "AuthorizerDependencyFailure", authz) in metrics


def test_the_authorizer_errors_alarm_leaves_out_the_401s_it_raises(template: dict[str, Any]) -> None:
    """Each 401 is the authorizer raising Unauthorized (a Lambda error) and one AuthFailures count: the alarm fires on
    errors beyond those, so a wrong key does not page anyone while a dependency outage does."""
    props = template["Resources"]["AuthorizerErrorsAlarm"]["Properties"]
    queries = {q["Id"]: q for q in props["Metrics"]}
    assert queries["failures"]["Expression"] == "FILL(errors, 0) - FILL(refusals, 0)"
    refusals = queries["refusals"]["MetricStat"]["Metric"]
    assert (refusals["Namespace"], refusals["MetricName"]) == ("Bulwark", "AuthFailures")
    assert refusals["Dimensions"] == [{"Name": "service", "Value": "bulwark-authorizer"}]
    source = (ROOT / "layers/bulwark/bulwark/services/authorizer_service.py").read_text()
    fail = source[source.index("def _fail") :]
    fail = fail[: fail.index("raise Unauthorized")]
    assert 'count(self._metrics, "AuthFailures"' in fail  # every Unauthorized raise is counted first


def test_the_api_alarm_watches_the_api_by_the_name_the_template_gives_it(template: dict[str, Any]) -> None:
    api = template["Resources"]["BulwarkApi"]["Properties"]
    assert api["Name"] == {"Fn::Sub": "${AWS::StackName}-api"}
    assert api["StageName"] == {"Ref": "StageName"}


def test_every_alarm_notifies_and_is_named_after_the_stack(template: dict[str, Any]) -> None:
    """The KMS key lets CloudWatch publish only for alarms named <stack>-... (aws:SourceArn), so every alarm is."""
    for name, alarm in of_type(template, "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), name
        assert props["TreatMissingData"] in ("notBreaching", "ignore"), name


# ------------------------------------------------------------------------------------------------------------- WAF

# Managed rules that inspect the body and fire on ordinary prompts: counted, never blocking.
COUNTED_BODY_RULES = {
    "AWSManagedRulesCommonRuleSet": {
        "SizeRestrictions_BODY",  # any body over 8 KB: a long conversation
        "CrossSiteScripting_BODY",  # "why does <script>alert(1)</script> run?"
        "GenericLFI_BODY",  # "what is in ../config/settings.py"
        "GenericRFI_BODY",  # a URL with a query in a prompt
        "EC2MetaDataSSRF_BODY",  # "what does 169.254.169.254 answer?"
    },
    "AWSManagedRulesKnownBadInputsRuleSet": {
        "Log4JRCE_BODY",  # "explain the ${jndi:ldap://...} exploit"
        "JavaDeserializationRCE_BODY",  # a serialized Java object pasted for review
    },
}


def web_acl_rules(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["Name"]: rule for rule in template["Resources"]["WebAcl"]["Properties"]["Rules"]}


def test_waf_counts_the_body_rules_that_fire_on_real_prompts(template: dict[str, Any]) -> None:
    groups = {
        rule["Statement"]["ManagedRuleGroupStatement"]["Name"]: rule
        for rule in web_acl_rules(template).values()
        if "ManagedRuleGroupStatement" in rule["Statement"]
    }
    for group, expected in COUNTED_BODY_RULES.items():
        statement = groups[group]["Statement"]["ManagedRuleGroupStatement"]
        overrides = {o["Name"]: o["ActionToUse"] for o in statement.get("RuleActionOverrides", [])}
        assert set(overrides) == expected, group  # exactly these: every other rule of the group blocks
        assert all(action == {"Count": {}} for action in overrides.values()), overrides
        assert groups[group]["OverrideAction"] == {"None": {}}  # the group's own verdicts stand (not all counted)


def test_waf_states_which_rules_block_and_which_count(template: dict[str, Any]) -> None:
    """The whole WebACL, rule by rule: the IP lists and the rate rule block; managed groups block except the body
    rules listed above."""
    verdicts = {}
    for name, rule in web_acl_rules(template).items():
        if "Action" in rule:
            verdicts[name] = next(iter(rule["Action"]))
            continue
        assert rule["OverrideAction"] == {"None": {}}, name  # a managed group's own verdicts stand
        statement = rule["Statement"]["ManagedRuleGroupStatement"]
        counted = sorted(o["Name"] for o in statement.get("RuleActionOverrides", []))
        verdicts[name] = f"Block, except Count: {', '.join(counted)}" if counted else "Block"
    assert verdicts == {
        "BlockListedIps": "Block",
        "AmazonIpReputationList": "Block",
        "RateLimitPerIp": "Block",
        "CommonRuleSet": "Block, except Count: CrossSiteScripting_BODY, EC2MetaDataSSRF_BODY, GenericLFI_BODY, "
        "GenericRFI_BODY, SizeRestrictions_BODY",
        "KnownBadInputs": "Block, except Count: JavaDeserializationRCE_BODY, Log4JRCE_BODY",
    }
    assert web_acl_rules(template)["RateLimitPerIp"]["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    assert (
        "RuleActionOverrides"
        not in (web_acl_rules(template)["AmazonIpReputationList"]["Statement"]["ManagedRuleGroupStatement"])
    )


# ------------------------------------------------------------------------------------------------------------- TLS


def test_api_and_domain_use_the_newest_tls_policy_in_strict_mode(template: dict[str, Any]) -> None:
    param = template["Parameters"]["TlsSecurityPolicy"]
    assert param["Default"] == "SecurityPolicy_TLS13_1_2_PFS_PQ_2025_09"
    assert set(param["AllowedValues"]) == {
        "SecurityPolicy_TLS13_1_2_PFS_PQ_2025_09",
        "SecurityPolicy_TLS13_1_3_2025_09",
    }
    for resource in ("BulwarkApi", "ApiDomain"):
        props = template["Resources"][resource]["Properties"]
        assert props["SecurityPolicy"] == {"Ref": "TlsSecurityPolicy"}, resource
        assert props["EndpointAccessMode"] == "STRICT", resource  # required by enhanced policies; SNI must match


def test_the_execute_api_endpoint_is_off_when_a_custom_domain_is_configured(template: dict[str, Any]) -> None:
    assert template["Parameters"]["DisableExecuteApiEndpoint"]["Default"] == "true"
    condition = template["Conditions"]["ExecuteApiEndpointDisabled"]
    assert condition == {
        "Fn::And": [{"Condition": "HasCustomDomain"}, {"Fn::Equals": [{"Ref": "DisableExecuteApiEndpoint"}, "true"]}]
    }
    api = template["Resources"]["BulwarkApi"]["Properties"]
    assert api["DisableExecuteApiEndpoint"] == {"Fn::If": ["ExecuteApiEndpointDisabled", True, False]}
    # Clients (and bulwark verify --stack) are pointed at the address that answers.
    base = template["Outputs"]["ApiBaseUrl"]["Value"]["Fn::If"]
    assert base[0] == "HasCustomDomain" and base[1] == {"Fn::Sub": "https://${DomainName}"}


# ------------------------------------------------------------------------------------------------- execution logs


def test_execution_logging_is_off_and_the_access_log_carries_the_errors(template: dict[str, Any]) -> None:
    """API Gateway creates its execution log group itself, unencrypted and never expiring: logging is off, and the
    encrypted access log (with retention) has each request's error fields."""
    api = template["Resources"]["BulwarkApi"]["Properties"]
    for setting in api["MethodSettings"]:
        assert setting["LoggingLevel"] == "OFF"
        assert setting["DataTraceEnabled"] is False
    access_format = api["AccessLogSetting"]["Format"]
    for field in ("$context.error.message", "$context.integration.error", "$context.authorizer.error"):
        assert field in access_format
    group = template["Resources"]["ApiAccessLogGroup"]["Properties"]
    assert group["KmsKeyId"] == {"Fn::GetAtt": ["BulwarkKey", "Arn"]}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# ------------------------------------------------------------------------------------------------- KMS key policy


def key_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(template["Resources"]["BulwarkKey"]["Properties"]["KeyPolicy"]["Statement"])


def test_kms_key_policy_has_no_duplicate_statements(template: dict[str, Any]) -> None:
    statements = key_statements(template)
    sids = [s["Sid"] for s in statements]
    assert len(sids) == len(set(sids))
    grants = [(json.dumps(s["Principal"], sort_keys=True), json.dumps(s["Action"])) for s in statements]
    assert len(grants) == len(set(grants))
    principals = [json.dumps(s["Principal"], sort_keys=True) for s in statements]
    assert len(principals) == len(set(principals)), "one statement per principal"


def test_kms_service_principals_are_bound_to_this_account_and_stack(template: dict[str, Any]) -> None:
    for statement in key_statements(template):
        service = statement["Principal"].get("Service")
        if service is None:
            continue
        condition = json.dumps(statement.get("Condition", {}))
        if "logs." in json.dumps(service):
            # CloudWatch Logs' binding is the encryption context: the ARNs of this stack's own log groups.
            arns = statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
            assert arns and all("${AWS::AccountId}:log-group:" in a["Fn::Sub"] for a in arns)
            assert all("${AWS::StackName}" in a["Fn::Sub"] for a in arns)
        else:
            assert '"aws:SourceAccount": {"Ref": "AWS::AccountId"}' in condition, statement["Sid"]
            assert "aws:SourceArn" in condition and "${AWS::StackName}-" in condition, statement["Sid"]


def test_every_encrypted_log_group_is_named_inside_the_key_policys_patterns(template: dict[str, Any]) -> None:
    """A log group outside the patterns could not be encrypted with the key: the deployment would fail."""
    prefixes = (
        "/aws/lambda/${AWS::StackName}-",
        "/aws/apigateway/${AWS::StackName}-",
        "aws-waf-logs-${AWS::StackName}",
    )
    for name, group in of_type(template, "AWS::Logs::LogGroup").items():
        log_name = group["Properties"]["LogGroupName"]["Fn::Sub"]
        assert log_name.startswith(prefixes), name


# --------------------------------------------------------------------------------------------- per-stack prefixes


def invoker_resource(template: dict[str, Any], sid: str) -> str:
    for policy in template["Resources"]["InvokerRole"]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if isinstance(statement, dict) and statement.get("Sid") == sid:
                return str(statement["Resource"]["Fn::Sub"])
    raise AssertionError(f"no statement {sid}")


def test_upstream_secrets_and_sagemaker_endpoints_are_named_per_stack(template: dict[str, Any]) -> None:
    """Two stacks in one account cannot read each other's upstream secrets or call each other's endpoints."""
    secrets = invoker_resource(template, "ReadUpstreamSecrets")
    assert secrets.endswith(":secret:${UpstreamSecretPrefix}${AWS::StackName}/*")
    endpoints = invoker_resource(template, "InvokeSageMakerEndpointsByPrefix")
    assert endpoints.endswith(":endpoint/${SageMakerEndpointPrefix}${AWS::StackName}-*")
