"""The local stack's IAM evaluator (bulwark_dev.local.iam_policy): the decisions AWS documents, one rule per test.

Every condition operator template.yaml uses is covered here (StringEquals, StringLike, StringEqualsIfExists, the
ForAllValues: qualifier), with the set and missing-key semantics AWS documents, plus explicit Deny over Allow and
wildcards in actions and resources.
"""

from __future__ import annotations

from typing import Any

import pytest

from bulwark_dev.local.iam_policy import Policy, PolicyError, Statement, condition_holds, evaluate, wildcard_match

TABLE = "arn:aws:dynamodb:us-east-1:000000000000:table/keys"


def allow(
    action: Any, resource: Any = "*", condition: dict[str, Any] | None = None, effect: str = "Allow"
) -> Statement:
    raw: dict[str, Any] = {"Effect": effect, "Action": action, "Resource": resource}
    if condition:
        raw["Condition"] = condition
    return Statement.parse(raw)


def test_an_allow_for_the_action_and_resource_admits() -> None:
    decision = evaluate([allow("dynamodb:GetItem", TABLE)], "dynamodb:GetItem", TABLE)
    assert decision.allowed and decision.reason == "allowed"


def test_nothing_matching_is_an_implicit_deny() -> None:
    decision = evaluate([allow("dynamodb:GetItem", TABLE)], "dynamodb:BatchGetItem", TABLE)
    assert not decision.allowed and decision.reason == "implicit_deny"


def test_explicit_deny_wins_over_allow_in_any_order() -> None:
    deny = allow("dynamodb:*", TABLE, effect="Deny")
    for statements in ([allow("dynamodb:GetItem", TABLE), deny], [deny, allow("dynamodb:GetItem", TABLE)]):
        decision = evaluate(statements, "dynamodb:GetItem", TABLE)
        assert decision.reason == "explicit_deny" and decision.statement is deny


def test_action_wildcards_and_case() -> None:
    assert wildcard_match("dynamodb:Get*", "dynamodb:GetItem", ignore_case=True)
    assert wildcard_match("DynamoDB:getitem", "dynamodb:GetItem", ignore_case=True)
    assert wildcard_match("dynamodb:?etItem", "dynamodb:GetItem", ignore_case=True)
    assert not wildcard_match("dynamodb:Get*", "dynamodb:BatchGetItem", ignore_case=True)
    assert evaluate([allow("dynamodb:*", TABLE)], "dynamodb:Scan", TABLE).allowed


def test_resource_wildcards_are_case_sensitive_and_brackets_are_literal() -> None:
    prefix = "arn:aws:secretsmanager:us-east-1:000000000000:secret:bulwark/upstream/*"
    assert evaluate(
        [allow("secretsmanager:GetSecretValue", prefix)], "secretsmanager:GetSecretValue", prefix[:-1] + "a-1"
    ).allowed
    assert not evaluate(
        [allow("s3:GetObject", "arn:aws:s3:::Bucket/*")], "s3:GetObject", "arn:aws:s3:::bucket/x"
    ).allowed
    assert not wildcard_match("a[bc]", "ab")  # IAM has no character classes
    assert wildcard_match("a[bc]", "a[bc]")


def test_not_action_and_not_resource() -> None:
    everything_but = Statement.parse({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert evaluate([everything_but], "dynamodb:GetItem", TABLE).allowed
    assert not evaluate([everything_but], "iam:PassRole", "*").allowed
    other_tables = Statement.parse({"Effect": "Allow", "Action": "dynamodb:GetItem", "NotResource": TABLE})
    assert not evaluate([other_tables], "dynamodb:GetItem", TABLE).allowed
    assert evaluate([other_tables], "dynamodb:GetItem", TABLE + "2").allowed


def test_string_equals_any_value_of_the_list() -> None:
    assert condition_holds("StringEquals", "kms:ViaService", ["dynamodb.x", "sqs.x"], {"kms:ViaService": "sqs.x"})
    assert not condition_holds("StringEquals", "kms:ViaService", ["dynamodb.x"], {"kms:ViaService": "lambda.x"})
    assert not condition_holds("StringEquals", "kms:ViaService", ["dynamodb.x"], {})  # absent key: no match


def test_condition_keys_are_case_insensitive_values_are_not() -> None:
    assert condition_holds("StringEquals", "KMS:VIASERVICE", ["a"], {"kms:ViaService": "a"})
    assert not condition_holds("StringEquals", "kms:ViaService", ["A"], {"kms:ViaService": "a"})
    assert condition_holds("StringEqualsIgnoreCase", "kms:ViaService", ["A"], {"kms:ViaService": "a"})


def test_string_like_and_not_like() -> None:
    assert condition_holds("StringLike", "k", ["fail#*"], {"k": "fail#127.0.0.1"})
    assert not condition_holds("StringLike", "k", ["fail#*"], {"k": "lim#x"})
    assert condition_holds("StringNotLike", "k", ["fail#*"], {"k": "lim#x"})
    assert condition_holds("StringNotEquals", "k", ["a"], {})  # a negated operator holds for an absent key


def test_if_exists_holds_for_an_absent_key_and_checks_a_present_one() -> None:
    assert condition_holds("StringEqualsIfExists", "dynamodb:ReturnValues", ["NONE"], {})
    assert condition_holds("StringEqualsIfExists", "dynamodb:ReturnValues", ["NONE"], {"dynamodb:ReturnValues": "NONE"})
    assert not condition_holds(
        "StringEqualsIfExists", "dynamodb:ReturnValues", ["NONE"], {"dynamodb:ReturnValues": "ALL_OLD"}
    )


def test_for_all_values_is_a_subset_check_and_vacuous_for_an_absent_key() -> None:
    allowed = ["pk", "last_used_at", "networks"]
    assert condition_holds(
        "ForAllValues:StringEquals", "dynamodb:Attributes", allowed, {"dynamodb:Attributes": ["pk", "networks"]}
    )
    assert not condition_holds(
        "ForAllValues:StringEquals", "dynamodb:Attributes", allowed, {"dynamodb:Attributes": ["pk", "status"]}
    )
    assert condition_holds("ForAllValues:StringEquals", "dynamodb:Attributes", allowed, {})
    assert condition_holds(
        "ForAllValues:StringLike", "dynamodb:LeadingKeys", ["key#*"], {"dynamodb:LeadingKeys": ["key#a", "key#b"]}
    )
    assert not condition_holds(
        "ForAllValues:StringLike", "dynamodb:LeadingKeys", ["key#*"], {"dynamodb:LeadingKeys": ["key#a", "fail#b"]}
    )


def test_for_any_value_needs_one_match() -> None:
    assert condition_holds("ForAnyValue:StringEquals", "k", ["a"], {"k": ["b", "a"]})
    assert not condition_holds("ForAnyValue:StringEquals", "k", ["a"], {"k": ["b"]})
    assert not condition_holds("ForAnyValue:StringEquals", "k", ["a"], {})


def test_arn_numeric_bool_and_null_operators() -> None:
    role = "arn:aws:iam::000000000000:role/validator"
    assert condition_holds("ArnLike", "aws:PrincipalArn", ["arn:aws:iam::*:role/val*"], {"aws:PrincipalArn": role})
    assert not condition_holds("ArnLike", "aws:PrincipalArn", ["arn:aws:iam::*:role/inv*"], {"aws:PrincipalArn": role})
    assert condition_holds("ArnEquals", "aws:PrincipalArn", [role], {"aws:PrincipalArn": role})
    assert condition_holds("NumericLessThanEquals", "n", ["10"], {"n": 10})
    assert not condition_holds("NumericGreaterThan", "n", ["10"], {"n": "10"})
    assert condition_holds("Bool", "aws:SecureTransport", ["true"], {"aws:SecureTransport": True})
    assert condition_holds("Null", "dynamodb:LeadingKeys", ["false"], {"dynamodb:LeadingKeys": ["x"]})
    assert condition_holds("Null", "dynamodb:LeadingKeys", ["true"], {})


def test_every_condition_of_a_statement_must_hold() -> None:
    statement = allow(
        "dynamodb:UpdateItem",
        TABLE,
        {
            "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "last_used_at"]},
            "StringEqualsIfExists": {"dynamodb:ReturnValues": "NONE"},
        },
    )
    ok = {"dynamodb:Attributes": ["pk", "last_used_at"], "dynamodb:ReturnValues": "NONE"}
    assert evaluate([statement], "dynamodb:UpdateItem", TABLE, ok).allowed
    assert not evaluate([statement], "dynamodb:UpdateItem", TABLE, {**ok, "dynamodb:ReturnValues": "ALL_NEW"}).allowed


@pytest.mark.parametrize("operator", ["StringSoundsLike", "ForEach:StringEquals", "NullIfExists"])
def test_an_unknown_operator_is_an_error_not_a_silent_true(operator: str) -> None:
    with pytest.raises(PolicyError):
        allow("s3:GetObject", "*", {operator: {"k": "v"}})


def test_a_policy_document_parses_its_statements_with_names() -> None:
    policy = Policy.parse(
        {"Statement": [{"Sid": "A", "Effect": "Allow", "Action": "x:Y", "Resource": "*"}]}, source="Role/policy"
    )
    assert [s.name for s in policy.statements] == ["Role/policy/A"]
    with pytest.raises(PolicyError):
        Policy.parse({"Statement": [{"Effect": "Maybe", "Action": "x:Y", "Resource": "*"}]})
