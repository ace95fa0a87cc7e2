"""Bulwark's SigV4 signer must produce exactly botocore's signature for the same request, credentials and clock."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from bulwark.aws.sigv4 import Credentials, CredentialSource, CredentialsUnavailable, Signer, credentials_from_env

NOW = dt.datetime(2026, 11, 25, 13, 37, 5, tzinfo=dt.UTC)


def _botocore_authorization(
    creds: Credentials, region: str, service: str, url: str, headers: dict[str, str], body: bytes
) -> str:
    request = AWSRequest(method="POST", url=url, headers=headers, data=body)
    if creds.token:
        request.headers["X-Amz-Security-Token"] = creds.token
    request.headers["X-Amz-Date"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    auth = SigV4Auth(BotoCredentials(creds.access_key, creds.secret_key, creds.token), service, region)
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    signed = auth.signed_headers(auth.headers_to_sign(request))
    scope = f"{NOW:%Y%m%d}/{region}/{service}/aws4_request"
    return f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"


@pytest.mark.parametrize(
    ("service", "host", "path", "headers", "body"),
    [
        (
            "dynamodb",
            "dynamodb.eu-west-1.amazonaws.com",
            "/",
            {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.UpdateItem"},
            b'{"TableName":"t","Key":{"pk":{"S":"k#abc"}}}',
        ),
        (
            "lambda",
            "lambda.eu-west-1.amazonaws.com",
            # An ARN as the function name: the path is percent-encoded once when sent and again when signed.
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Abulwark-invoker/invocations",
            {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"},
            '{"payload":"héllo  spaced"}'.encode(),
        ),
        (
            "secretsmanager",
            "localhost:4566",
            "/",
            {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue"},
            b"",
        ),
    ],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////token=="])
def test_signature_equals_botocore(
    service: str, host: str, path: str, headers: dict[str, str], body: bytes, token: str | None
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    signer = Signer("eu-west-1", service, CredentialSource(lambda: creds))
    ours = signer.sign("POST", host, path, dict(headers), body, now=NOW)
    scheme = "http" if host.startswith("localhost") else "https"
    expected = _botocore_authorization(creds, "eu-west-1", service, f"{scheme}://{host}{path}", headers, body)
    assert ours["Authorization"] == expected
    assert ours["x-amz-date"] == "20261125T133705Z"
    assert ours.get("x-amz-security-token") == token


def test_signing_key_follows_the_date_and_a_rotated_secret() -> None:
    current = [Credentials("AKID", "secret-one")]
    signer = Signer("us-east-1", "dynamodb", CredentialSource(lambda: current[0]))
    first = signer.sign("POST", "h", "/", {}, b"", now=NOW)["Authorization"]
    assert signer.sign("POST", "h", "/", {}, b"", now=NOW + dt.timedelta(days=1))["Authorization"] != first
    rotated = Signer("us-east-1", "dynamodb", CredentialSource(lambda: Credentials("AKID", "secret-two")))
    assert rotated.sign("POST", "h", "/", {}, b"", now=NOW)["Authorization"] != first


def test_expiring_credentials_are_renewed_before_they_expire() -> None:
    import time

    issued = [0]

    def resolve() -> Credentials:
        issued[0] += 1
        # The first set expires within the refresh margin, so it is replaced on the next call.
        return Credentials(f"AKID{issued[0]}", "s", "t", time.time() + (60 if issued[0] == 1 else 3600))

    source = CredentialSource(resolve)
    assert source.get().access_key == "AKID1"
    assert source.get().access_key == "AKID2"
    assert source.get().access_key == "AKID2"


def test_no_credentials_fails_closed() -> None:
    with pytest.raises(CredentialsUnavailable):
        CredentialSource(lambda: None).get()

    def broken() -> Credentials:
        raise OSError("metadata service unreachable")

    with pytest.raises(CredentialsUnavailable):
        CredentialSource(broken).get()


def test_credentials_never_print_their_secret() -> None:
    creds = Credentials("AKIDEXAMPLE", "the-secret-key", "the-session-token")
    assert "the-secret-key" not in repr(creds) and "the-session-token" not in repr(creds)
    assert "the-secret-key" not in str(creds)


def test_credentials_from_the_lambda_environment() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    assert credentials_from_env(env) == Credentials("AKID", "s", "t")
    assert credentials_from_env({"AWS_ACCESS_KEY_ID": "AKID"}) is None
