"""The local AWS endpoint's reading of requests: SigV4 verification and what DynamoDB authorizes for a call."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from bulwark.aws.sigv4 import Credentials, CredentialSource, Signer
from bulwark_dev.local.aws_endpoint import dynamodb_checks, expression_attributes, signature_valid
from bulwark_dev.local.iam_roles import load_roles

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 2, 1, 0, 0, tzinfo=dt.UTC)


def _signed(secret: str = "s3cret", path: str = "/", body: bytes = b"{}") -> dict[str, str]:
    signer = Signer("us-east-1", "dynamodb", CredentialSource(lambda: Credentials("AKLOCAL", secret)))
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.GetItem"}
    return signer.sign("POST", "127.0.0.1:9", path, headers, body, now=NOW)


def test_a_signature_made_with_the_functions_secret_verifies() -> None:
    assert signature_valid("POST", "/", _signed(), b"{}", "s3cret", now=NOW)


def test_a_wrong_secret_a_changed_body_or_a_stale_date_is_refused() -> None:
    assert not signature_valid("POST", "/", _signed("other"), b"{}", "s3cret", now=NOW)
    assert not signature_valid("POST", "/", _signed(), b'{"x":1}', "s3cret", now=NOW)
    assert not signature_valid("POST", "/", _signed(), b"{}", "s3cret", now=NOW + dt.timedelta(minutes=16))
    assert not signature_valid("POST", "/", {"Authorization": "none"}, b"{}", "s3cret", now=NOW)


def test_botocore_signatures_verify_too_with_a_quoted_lambda_path() -> None:
    """boto3 (Bedrock, SageMaker, the CLI) signs its own way: the same verification accepts it."""
    path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ax/invocations"
    request = AWSRequest(
        method="POST", url=f"http://127.0.0.1:9{path}", data=b"{}", headers={"X-Amz-Invocation-Type": "RequestResponse"}
    )
    SigV4Auth(BotoCredentials("AKLOCAL", "s3cret"), "lambda", "us-east-1").add_auth(request)
    headers = {"Host": "127.0.0.1:9", **{k: str(v) for k, v in request.headers.items()}}  # as sent on the wire
    assert signature_valid("POST", path, headers, b"{}", "s3cret")
    assert not signature_valid("POST", path, headers, b"{}", "wrong")


def test_expression_attributes_are_the_top_level_names() -> None:
    names = {"#s": "status"}
    assert expression_attributes("SET last_used_at = :now, networks = :nets", None) == {"last_used_at", "networks"}
    assert expression_attributes("attribute_exists(pk) AND #s = :a AND expires_at <= :now", names) == {
        "pk",
        "status",
        "expires_at",
    }
    assert expression_attributes("SET a.b[1] = list_append(a.b, :v) REMOVE c", None) == {"a", "c"}


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_roles(ROOT / "template.yaml")


def test_a_batch_get_is_one_check_per_table_with_its_leading_keys(model) -> None:  # type: ignore[no-untyped-def]
    keys, counters = "bulwark-local-KeysTable", "bulwark-local-CountersTable"
    checks = dynamodb_checks(
        "BatchGetItem",
        {"RequestItems": {keys: {"Keys": [{"pk": {"S": "key#a"}}]}, counters: {"Keys": [{"pk": {"S": "fail#ip"}}]}}},
        model,
    )
    dynamo = [c for c in checks if c.action == "dynamodb:BatchGetItem"]
    assert [c.resource.rsplit("/", 1)[1] for c in dynamo] == [keys, counters]
    assert [c.context["dynamodb:LeadingKeys"] for c in dynamo] == [["key#a"], ["fail#ip"]]
    # Both tables are encrypted with the stack's key: DynamoDB decrypts on the caller's behalf.
    kms = [c for c in checks if c.action == "kms:Decrypt"]
    assert len(kms) == 2 and all(c.context["kms:ViaService"] == "dynamodb.us-east-1.amazonaws.com" for c in kms)


def test_an_update_names_the_attributes_it_touches_with_the_key(model) -> None:  # type: ignore[no-untyped-def]
    (check, _) = dynamodb_checks(
        "UpdateItem",
        {
            "TableName": "bulwark-local-KeysTable",
            "Key": {"pk": {"S": "key#a"}},
            "UpdateExpression": "SET #s = :r",
            "ExpressionAttributeNames": {"#s": "status"},
        },
        model,
    )
    assert check.context["dynamodb:Attributes"] == ["pk", "status"]
    assert check.context["dynamodb:ReturnValues"] == "NONE"
