"""The deployed shape, asserted on the parsed template.yaml: privilege separation, encryption, firewall, gateway errors.

These are the promises docs/SECURITY.md makes about the template. They read the template as CloudFormation does
(cfn-lint's decoder understands the short-form tags), so a change that weakens one fails here before any scanner runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]

# The only actions that may use Resource "*": X-Ray has no resource-level permissions for them.
STAR_RESOURCE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
FUNCTION_ROLES = {
    "AuthorizerFunction": "AuthorizerRole",
    "ValidatorFunction": "ValidatorRole",
    "InvokerFunction": "InvokerRole",
    "JanitorFunction": "JanitorRole",
}
ERROR_TYPES = {
    "authentication_error",
    "permission_error",
    "invalid_request_error",
    "rate_limit_error",
    "upstream_error",
    "service_unavailable",
    "api_error",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data, matches = decode(str(ROOT / "template.yaml"))
    assert not matches, matches
    assert data is not None
    return dict(data)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res.get("Type") == kind}


def _branches(value: Any) -> Iterator[Any]:
    """Every concrete value an Fn::If can take (AWS::NoValue dropped)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, yes, no = value["Fn::If"]
        yield from _branches(yes)
        yield from _branches(no)
    elif isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            yield from _branches(statement)


def all_role_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Inline role policies, and AWS::IAM::RolePolicy resources attached to a role (named after the role)."""
    for name, role in resources(template, "AWS::IAM::Role").items():
        for statement in statements(role):
            yield name, statement
    for policy in resources(template, "AWS::IAM::RolePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield policy["Properties"]["RoleName"]["Ref"], statement


def refers_to(value: Any, logical_id: str) -> bool:
    text = json.dumps(value)
    return f'"{logical_id}"' in text or f"${{{logical_id}" in text


# ------------------------------------------------------------------------------------------------- least privilege


def test_no_wildcard_actions_anywhere(template: dict[str, Any]) -> None:
    for role, statement in all_role_statements(template):
        for action in _as_list(statement["Action"]):
            assert action != "*" and not str(action).endswith(":*"), f"{role}: wildcard action {action}"


def test_star_resources_only_where_aws_offers_nothing_narrower(template: dict[str, Any]) -> None:
    for role, statement in all_role_statements(template):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= STAR_RESOURCE_ACTIONS, f"{role}: {statement}"


def test_each_function_has_its_own_role_and_no_sam_policy_templates(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTION_ROLES)
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Role"] == {"Fn::GetAtt": [FUNCTION_ROLES[name], "Arn"]}
        assert "Policies" not in props, f"{name}: SAM policy templates grant more than the function needs"
    for name in FUNCTION_ROLES.values():
        role = template["Resources"][name]["Properties"]
        assert "ManagedPolicyArns" not in role, f"{name}: managed policies are broader than its own statements"
        principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        assert principal == {"Service": "lambda.amazonaws.com"}


def test_the_invoker_is_not_reachable_from_api_gateway(template: dict[str, Any]) -> None:
    invoker = template["Resources"]["InvokerFunction"]["Properties"]
    assert not invoker.get("Events"), "the invoker must have no event source"
    for name, permission in resources(template, "AWS::Lambda::Permission").items():
        assert not refers_to(permission["Properties"]["FunctionName"], "InvokerFunction"), name


def test_only_the_validator_may_invoke_the_invoker(template: dict[str, Any]) -> None:
    invokers = {
        role
        for role, statement in all_role_statements(template)
        if any(str(a).startswith("lambda:Invoke") for a in _as_list(statement["Action"]))
    }
    assert invokers == {"ValidatorRole"}
    (statement,) = (
        s
        for r, s in all_role_statements(template)
        if r == "ValidatorRole" and "lambda:InvokeFunction" in _as_list(s["Action"])
    )
    # Invoke and, for streamed answers, InvokeWithResponseStream: AWS authorizes both as lambda:InvokeFunction (the
    # Lambda API reference), so that is the one action, on the invoker alone.
    assert _as_list(statement["Action"]) == ["lambda:InvokeFunction"]
    assert statement["Resource"] == {"Fn::GetAtt": ["InvokerFunction", "Arn"]}


def test_only_the_invoker_may_call_models_or_read_upstream_secrets(template: dict[str, Any]) -> None:
    for role, statement in all_role_statements(template):
        actions = _as_list(statement["Action"])
        model_actions = [a for a in actions if str(a).split(":")[0] in ("bedrock", "sagemaker")]
        upstream_secret = "secretsmanager:GetSecretValue" in actions and refers_to(
            statement["Resource"], "UpstreamSecretPrefix"
        )
        if model_actions or upstream_secret:
            assert role == "InvokerRole", f"{role} may call a model or read an upstream secret: {statement}"
    invoker = {a for _, s in all_role_statements(template) if _ == "InvokerRole" for a in _as_list(s["Action"])}
    assert {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream", "sagemaker:InvokeEndpoint"} <= invoker


def test_model_permissions_are_scoped_to_configured_resources(template: dict[str, Any]) -> None:
    for _role, statement in all_role_statements(template):
        actions = _as_list(statement["Action"])
        if "bedrock:InvokeModel" in actions:
            assert statement["Resource"] == {"Ref": "BedrockModelArns"}
        if "bedrock:ApplyGuardrail" in actions:
            assert statement["Resource"] == {"Ref": "BedrockGuardrailArns"}
        if "sagemaker:InvokeEndpoint" in actions:
            assert "endpoint/${SageMakerEndpointPrefix}${AWS::StackName}-*" in json.dumps(statement["Resource"])


def test_the_validator_has_no_secret_or_model_access(template: dict[str, Any]) -> None:
    for role, statement in all_role_statements(template):
        if role == "ValidatorRole":
            for action in _as_list(statement["Action"]):
                assert not str(action).startswith(("bedrock:", "sagemaker:", "secretsmanager:")), action


def test_table_permissions_are_item_level_on_own_tables(template: dict[str, Any]) -> None:
    """Which actions each role needs is proven by running the code against the roles (the local stack enforces IAM,
    tests/e2e/test_iam_enforced.py drops each statement in turn); here only the shape: item-level actions on the
    role's own tables, Scan for the janitor alone, and nothing that reads or writes a whole table."""
    own = {
        "AuthorizerRole": {"KeysTable", "CountersTable"},
        "ValidatorRole": {"CountersTable"},
        "InvokerRole": {"IdempotencyTable"},
        "JanitorRole": {"KeysTable"},
    }
    item_level = {"GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"}
    for role, statement in all_role_statements(template):
        actions = {str(a).split(":", 1)[1] for a in _as_list(statement["Action"]) if str(a).startswith("dynamodb:")}
        if not actions:
            continue
        (table,) = statement["Resource"]["Fn::GetAtt"][:1]
        assert table in own[role], f"{role} reaches {table}"
        allowed = item_level | ({"Scan"} if role == "JanitorRole" else set())
        assert actions <= allowed, f"{role}: {actions - allowed}"


def test_counter_items_are_limited_to_each_functions_prefixes(template: dict[str, Any]) -> None:
    prefixes: dict[str, set[str]] = {}
    for role, statement in all_role_statements(template):
        if refers_to(statement["Resource"], "CountersTable"):
            leading = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
            prefixes.setdefault(role, set()).update(leading)
    assert prefixes == {"AuthorizerRole": {"fail#*"}, "ValidatorRole": {"lim#*"}}


def test_the_authorizer_updates_only_the_usage_fields_of_a_key(template: dict[str, Any]) -> None:
    (update,) = (
        s
        for r, s in all_role_statements(template)
        if r == "AuthorizerRole"
        and refers_to(s["Resource"], "KeysTable")
        and "dynamodb:UpdateItem" in _as_list(s["Action"])
    )
    assert update["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"] == ["pk", "last_used_at", "networks"]


def test_only_the_validator_signs_and_only_the_invoker_verifies_invoker_requests(template: dict[str, Any]) -> None:
    key = template["Resources"]["InvokerMacKey"]["Properties"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("HMAC_256", "GENERATE_VERIFY_MAC")
    users: dict[str, set[str]] = {}
    for statement in key["KeyPolicy"]["Statement"]:
        for action in _as_list(statement["Action"]):
            users.setdefault(json.dumps(statement["Principal"]["AWS"]), set()).add(action)
    assert users[json.dumps({"Fn::GetAtt": ["ValidatorRole", "Arn"]})] == {"kms:GenerateMac"}
    assert users[json.dumps({"Fn::GetAtt": ["InvokerRole", "Arn"]})] == {"kms:VerifyMac"}
    root = users[json.dumps({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"})]
    assert not any(a in ("kms:*", "kms:GenerateMac", "kms:VerifyMac") or a.endswith("Mac") for a in root)
    for function in ("ValidatorFunction", "InvokerFunction"):
        variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert variables["BULWARK_INVOKER_MAC_KEY"] == {"Fn::GetAtt": ["InvokerMacKey", "Arn"]}
    alarm = template["Resources"]["ForgedInvokerRequestAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("ForgedInvocations", 1)


def test_kms_use_is_scoped_to_the_stack_key(template: dict[str, Any]) -> None:
    for role, statement in all_role_statements(template):
        if any(str(a).startswith("kms:") for a in _as_list(statement["Action"])):
            assert statement["Resource"] == {"Fn::GetAtt": ["BulwarkKey", "Arn"]}, role


# ----------------------------------------------------------------------------------------------------- encryption


def test_kms_key_rotates_and_its_policy_names_only_the_account_and_services(template: dict[str, Any]) -> None:
    key = template["Resources"]["BulwarkKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"
    principals = [s["Principal"] for s in key["Properties"]["KeyPolicy"]["Statement"]]
    assert {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}} in principals
    for principal in principals:
        assert principal != "*" and principal.get("AWS") != "*"


def test_every_table_is_encrypted_with_the_cmk_and_recoverable(template: dict[str, Any]) -> None:
    tables = resources(template, "AWS::DynamoDB::Table")
    assert set(tables) >= {"KeysTable", "CountersTable", "IdempotencyTable"}
    for name, table in tables.items():
        props = table["Properties"]
        assert props["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": {"Fn::GetAtt": ["BulwarkKey", "Arn"]},
        }, name
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
        assert props["DeletionProtectionEnabled"] == {"Fn::If": ["TablesProtected", True, False]}, name
        assert "DeletionPolicy" in table and "UpdateReplacePolicy" in table, name
    assert tables["KeysTable"]["DeletionPolicy"] == "Retain"


def test_table_key_schemas_are_unchanged(template: dict[str, Any]) -> None:
    schemas = {n: t["Properties"]["KeySchema"] for n, t in resources(template, "AWS::DynamoDB::Table").items()}
    assert schemas["KeysTable"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert schemas["CountersTable"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert schemas["IdempotencyTable"] == [{"AttributeName": "id", "KeyType": "HASH"}]


def test_log_groups_are_encrypted_with_retention_and_each_function_has_one(template: dict[str, Any]) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    for name, group in groups.items():
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["BulwarkKey", "Arn"]}, name
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        assert "DeletionPolicy" in group, name
    for name in FUNCTION_ROLES:
        log_group = template["Resources"][name]["Properties"]["LoggingConfig"]["LogGroup"]
        assert log_group["Ref"] in groups


def test_secrets_queue_and_environment_use_the_cmk(template: dict[str, Any]) -> None:
    for name, secret in resources(template, "AWS::SecretsManager::Secret").items():
        assert secret["Properties"]["KmsKeyId"] == {"Ref": "BulwarkKey"}, name
    for name, queue in resources(template, "AWS::SQS::Queue").items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Ref": "BulwarkKey"}, name
    assert template["Globals"]["Function"]["KmsKeyArn"] == {"Fn::GetAtt": ["BulwarkKey", "Arn"]}


# ------------------------------------------------------------------------------------------- concurrency and DLQ


def test_functions_have_reserved_concurrency_and_the_async_one_a_dlq(template: dict[str, Any]) -> None:
    for name in FUNCTION_ROLES:
        assert "ReservedConcurrentExecutions" in template["Resources"][name]["Properties"], name
    janitor = template["Resources"]["JanitorFunction"]["Properties"]
    assert janitor["DeadLetterQueue"]["TargetArn"] == {"Fn::GetAtt": ["JanitorDeadLetterQueue", "Arn"]}


def test_function_contract_with_the_code_is_kept(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert {"BULWARK_KEYS_TABLE", "BULWARK_COUNTERS_TABLE", "BULWARK_HMAC_SECRET_ID"} <= set(env)
    res = template["Resources"]
    assert "BULWARK_INVOKER_FUNCTION" in res["ValidatorFunction"]["Properties"]["Environment"]["Variables"]
    assert "BULWARK_IDEMPOTENCY_TABLE" in res["InvokerFunction"]["Properties"]["Environment"]["Variables"]
    for name in FUNCTION_ROLES:
        assert res[name]["Properties"]["Handler"] == "app.lambda_handler"
    paths = {
        (e["Properties"]["Method"], e["Properties"]["Path"])
        for e in res["ValidatorFunction"]["Properties"]["Events"].values()
    }
    assert paths == {("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/models/{model}/invoke")}
    assert {"KeysTableName", "CountersTableName", "KeyHashSecretArn", "ApiBaseUrl"} <= set(template["Outputs"])


# ----------------------------------------------------------------------------------------------------- the stage


def test_stage_access_log_is_json_with_the_fields_an_investigation_needs(template: dict[str, Any]) -> None:
    api = template["Resources"]["BulwarkApi"]["Properties"]
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line = json.loads(api["AccessLogSetting"]["Format"])
    values = set(line.values())
    for variable in (
        "$context.requestId",
        "$context.identity.sourceIp",
        "$context.status",
        "$context.authorizer.principalId",
        "$context.authorizer.error",
        "$context.wafResponseCode",
        "$context.responseLatency",
    ):
        assert variable in values, variable
    assert not any("querystring" in v.lower() or "header" in v.lower() for v in values)
    assert api["TracingEnabled"] is True


def test_stage_throttles_and_never_logs_request_data(template: dict[str, Any]) -> None:
    (settings,) = template["Resources"]["BulwarkApi"]["Properties"]["MethodSettings"]
    assert settings["DataTraceEnabled"] is False
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert settings["MetricsEnabled"] is True


def test_functions_are_traced(template: dict[str, Any]) -> None:
    assert template["Globals"]["Function"]["Tracing"] == "Active"


# -------------------------------------------------------------------------------------------------- gateway errors

REQUIRED_RESPONSES = {
    "UNAUTHORIZED": 401,
    "ACCESS_DENIED": 403,
    "AUTHORIZER_FAILURE": 503,
    "AUTHORIZER_CONFIGURATION_ERROR": 503,
    "THROTTLED": 429,
    "QUOTA_EXCEEDED": 429,
    "WAF_FILTERED": 403,
    "REQUEST_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTEGRATION_TIMEOUT": 504,
    "DEFAULT_4XX": None,
    "DEFAULT_5XX": None,
}


@pytest.mark.parametrize("response_type", sorted(REQUIRED_RESPONSES))
def test_gateway_responses_speak_the_contract(template: dict[str, Any], response_type: str) -> None:
    responses = template["Resources"]["BulwarkApi"]["Properties"]["GatewayResponses"]
    response = responses[response_type]
    status = REQUIRED_RESPONSES[response_type]
    if status is not None:
        assert response["StatusCode"] == str(status)
    headers = response["ResponseParameters"]["Headers"]
    assert headers["Content-Type"] == "'application/json'"
    assert headers["x-request-id"] == "context.requestId"
    body = json.loads(response["ResponseTemplates"]["application/json"])
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is None and error["type"] in ERROR_TYPES and error["code"] and error["message"]
    if status in (429, 503):
        assert "Retry-After" in headers


def test_every_method_behind_the_authorizer_integrates_with_the_validator(template: dict[str, Any]) -> None:
    # An Allow that carries a refusal is rendered by the validator: a method that reached any other function (or a
    # method without the authorizer) would let a refused caller through.
    api = template["Resources"]["BulwarkApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "BulwarkAuthorizer"
    assert not {"DefinitionBody", "DefinitionUri"} & set(api)  # every method is a function's Api event, checked here
    assert not resources(template, "AWS::ApiGateway::Method")
    methods: list[tuple[str, str, str]] = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        for event in (function["Properties"].get("Events") or {}).values():
            if event["Type"] != "Api":
                continue
            props = event["Properties"]
            assert props["RestApiId"] == {"Ref": "BulwarkApi"}
            assert props.get("Auth", {}).get("Authorizer", "BulwarkAuthorizer") == "BulwarkAuthorizer"
            methods.append((name, props["Method"], props["Path"]))
    assert {m[1:] for m in methods} == {
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/models/{model}/invoke"),
    }
    assert {m[0] for m in methods} == {"ValidatorFunction"}


def test_access_denied_shows_the_code_and_message_the_authorizer_chose(template: dict[str, Any]) -> None:
    import re

    from bulwark.auth.context import CallerContext
    from bulwark.errors import IpNotAllowed

    response = template["Resources"]["BulwarkApi"]["Properties"]["GatewayResponses"]["ACCESS_DENIED"]
    body = response["ResponseTemplates"]["application/json"]
    used = set(re.findall(r"\$context\.authorizer\.(\w+)", body))
    assert used == {"denied_code", "denied_message"} and used <= set(CallerContext.model_fields)
    # Every context the authorizer writes fills them: a Deny names its reason, an Allow the model case.
    assert CallerContext.refused("ip:192.0.2.1", IpNotAllowed()).to_context()["denied_code"] == "ip_not_allowed"
    assert CallerContext(principal="key:x").to_context()["denied_code"] == "model_not_allowed"


def test_authorizer_failure_is_a_503_with_retry_after(template: dict[str, Any]) -> None:
    response = template["Resources"]["BulwarkApi"]["Properties"]["GatewayResponses"]["AUTHORIZER_FAILURE"]
    assert response["StatusCode"] == "503" and int(response["ResponseParameters"]["Headers"]["Retry-After"].strip("'"))
    error = json.loads(response["ResponseTemplates"]["application/json"])["error"]
    assert error["type"] == "service_unavailable"


def test_api_gateway_never_caches_authorizer_decisions(template: dict[str, Any]) -> None:
    authorizer = template["Resources"]["BulwarkApi"]["Properties"]["Auth"]["Authorizers"]["BulwarkAuthorizer"]
    assert authorizer["Identity"] == {"ReauthorizeEvery": 0}
    assert "AuthorizerCacheTtl" not in template["Parameters"]


def test_unauthorized_is_one_answer_with_a_bearer_challenge(template: dict[str, Any]) -> None:
    response = template["Resources"]["BulwarkApi"]["Properties"]["GatewayResponses"]["UNAUTHORIZED"]
    assert response["ResponseParameters"]["Headers"]["WWW-Authenticate"] == "'Bearer'"
    error = json.loads(response["ResponseTemplates"]["application/json"])["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_credentials")


# -------------------------------------------------------------------------------------------------------- firewall


def test_waf_is_associated_with_the_stage_when_enabled(template: dict[str, Any]) -> None:
    (association,) = resources(template, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Condition"] == "WafEnabled"
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}
    arn = association["Properties"]["ResourceArn"]["Fn::Sub"]
    assert "/restapis/${BulwarkApi}/stages/${BulwarkApi.Stage}" in arn
    assert template["Resources"]["WebAcl"]["Condition"] == "WafEnabled"


def test_waf_rules_cover_managed_groups_ip_sets_and_rate(template: dict[str, Any]) -> None:
    acl = template["Resources"]["WebAcl"]["Properties"]
    assert acl["Scope"] == "REGIONAL"
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    groups = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]: r
        for r in rules.values()
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
    } <= set(groups)
    overrides = groups["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]
    assert {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}} in overrides
    rate = rules["RateLimitPerIp"]
    assert rate["Statement"]["RateBasedStatement"]["Limit"] == {"Ref": "WafRateLimitPerIp"}
    assert rate["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    blocked = rules["BlockListedIps"]
    assert blocked["Statement"]["IPSetReferenceStatement"]["Arn"] == {"Fn::GetAtt": ["WafBlockedIpSet", "Arn"]}
    assert blocked["Priority"] == 0


def test_waf_block_bodies_are_the_contract_error_shape(template: dict[str, Any]) -> None:
    bodies = template["Resources"]["WebAcl"]["Properties"]["CustomResponseBodies"]
    blocked = json.loads(bodies["request_blocked"]["Content"])["error"]
    assert (blocked["type"], blocked["code"], blocked["param"]) == ("permission_error", "request_blocked", None)
    limited = json.loads(bodies["rate_limited"]["Content"])["error"]
    assert limited["type"] == "rate_limit_error"


def test_waf_logs_redact_credentials(template: dict[str, Any]) -> None:
    redacted = template["Resources"]["WafLogging"]["Properties"]["RedactedFields"]
    headers = {f["SingleHeader"]["Name"] for f in redacted if "SingleHeader" in f}
    assert {"authorization", "x-api-key"} <= headers
    assert {"QueryString": {}} in redacted


# ------------------------------------------------------------------------------------------------------------- TLS


def test_custom_domain_requires_tls12(template: dict[str, Any]) -> None:
    domain = template["Resources"]["ApiDomain"]
    assert domain["Condition"] == "HasCustomDomain"
    assert domain["Properties"]["SecurityPolicy"] == {"Ref": "TlsSecurityPolicy"}  # TLS 1.2+: test_template_ops.py
    api = template["Resources"]["BulwarkApi"]["Properties"]
    assert api["DisableExecuteApiEndpoint"] == {"Fn::If": ["ExecuteApiEndpointDisabled", True, False]}
