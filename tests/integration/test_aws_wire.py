"""The lean AWS clients (bulwark.aws.wire) against DynamoDB Local and scripted servers speaking the AWS wire protocols.

Given a fault (throttling, a 500, a reset, a slow answer, a corrupted body), the client either retries what is safe
within a bounded time or raises an error the callers turn into a fail-closed answer; a conditional failure is never
retried and keeps the item DynamoDB returned.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from bulwark.aws.clients import dynamodb_at
from bulwark.aws.sigv4 import Credentials, CredentialSource
from bulwark.aws.wire import AwsServiceError, AwsTransportError, Endpoint, LambdaClient, proxy_for, resolve_endpoint
from bulwark.errors import StoreUnavailable
from bulwark.store.dynamo import ConditionFailed, store_call
from tests.integration.wire import secretsmanager
from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4, unused_port
from tests.loopback import ConnectProxy

pytestmark = pytest.mark.integration

CREDS = CredentialSource(lambda: Credentials("AKIDTEST", "secret", "session-token"))


def _ddb_reply(body: dict[str, Any], status: int = 200, *, crc: int | None = None) -> Reply:
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "x-amz-crc32": str(zlib.crc32(data) if crc is None else crc),
    }
    return Reply(status, headers, data)


@pytest.fixture
def fake_ddb() -> Iterator[WireServer]:
    server = WireServer(lambda request: _ddb_reply({"Attributes": {"n": {"N": "1"}}})).start()
    yield server
    server.stop()


def _client(url: str, **overrides: Any) -> Any:
    client = dynamodb_at(url, credentials=CREDS)
    for name, value in overrides.items():
        setattr(client, name, value)
    return client


def test_requests_are_signed_json_with_the_target_and_the_session_token(fake_ddb: WireServer) -> None:
    result = _client(fake_ddb.url).update_item(TableName="t", Key={"pk": {"S": "a"}})
    assert result == {"Attributes": {"n": {"N": "1"}}}
    (request,) = fake_ddb.requests
    assert has_sigv4(request)
    assert request.headers["x-amz-target"] == "DynamoDB_20120810.UpdateItem"
    assert request.headers["content-type"] == "application/x-amz-json-1.0"
    assert request.headers["x-amz-security-token"] == "session-token"
    assert request.json() == {"TableName": "t", "Key": {"pk": {"S": "a"}}}


def test_connections_are_kept_alive(fake_ddb: WireServer) -> None:
    client = _client(fake_ddb.url)
    for _ in range(5):
        client.get_item(TableName="t", Key={})
    assert len({r.client_port for r in fake_ddb.requests}) == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    # An idle timeout on the server's side: the next invoke (which is never resent) must open a new connection rather
    # than send on the dead one and fail.
    server = _lambda_server()
    try:
        client = _lambda_client(server.url)
        client.invoke(FunctionName="invoker", Payload=b"{}")
        time.sleep(0.05)
        server.shutdown_connections()
        time.sleep(0.05)
        assert client.invoke(FunctionName="invoker", Payload=b"{}")["StatusCode"] == 200
        assert len(server.requests) == 2 and server.requests[0].client_port != server.requests[1].client_port
    finally:
        server.stop()


def test_conditional_failure_is_not_retried_and_keeps_the_old_item(fake_ddb: WireServer) -> None:
    refused = {
        "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
        "message": "The conditional request failed",
        "Item": {"pk": {"S": "a"}, "tokens": {"N": "7"}},
    }
    fake_ddb.script(_ddb_reply(refused, 400))
    with pytest.raises(ConditionFailed) as caught, store_call():
        _client(fake_ddb.url).update_item(TableName="t", Key={}, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert caught.value.item == {"pk": "a", "tokens": 7}
    assert len(fake_ddb.requests) == 1


@pytest.mark.parametrize(
    "fault",
    [
        _ddb_reply({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}, 400),
        _ddb_reply({"__type": "com.amazonaws.dynamodb#InternalServerError"}, 500),
        Reply(drop=True),
        _ddb_reply({"Attributes": {}}, crc=1),  # a corrupted answer
        Reply(200, {"Content-Type": "application/x-amz-json-1.0"}, b"<html>proxy error</html>"),
    ],
    ids=["throttled", "server-error", "reset", "bad-crc32", "garbage"],
)
def test_transient_faults_are_retried_once(fake_ddb: WireServer, fault: Reply) -> None:
    fake_ddb.script(fault)
    assert _client(fake_ddb.url).update_item(TableName="t", Key={}) == {"Attributes": {"n": {"N": "1"}}}
    assert len(fake_ddb.requests) == 2


def test_persistent_faults_fail_closed_after_the_retry(fake_ddb: WireServer) -> None:
    fake_ddb.script(*[_ddb_reply({"__type": "InternalServerError"}, 500)] * 2)
    with pytest.raises(StoreUnavailable), store_call():
        _client(fake_ddb.url).update_item(TableName="t", Key={})
    assert len(fake_ddb.requests) == 2


def test_client_errors_are_not_retried_and_do_not_carry_the_message(fake_ddb: WireServer) -> None:
    fake_ddb.script(_ddb_reply({"__type": "ValidationException", "message": "value sk-secret is invalid"}, 400))
    with pytest.raises(AwsServiceError) as caught:
        _client(fake_ddb.url).update_item(TableName="t", Key={})
    assert caught.value.code == "ValidationException"
    assert "sk-secret" not in str(caught.value)
    assert len(fake_ddb.requests) == 1


def test_a_slow_store_fails_within_the_read_timeout(fake_ddb: WireServer) -> None:
    client = _client(fake_ddb.url)
    client._read_timeout = 0.2
    fake_ddb.script(Reply(delay=1.0), Reply(delay=1.0))
    started = time.monotonic()
    with pytest.raises(AwsTransportError):
        client.get_item(TableName="t", Key={})
    assert time.monotonic() - started < 0.9  # two attempts of 0.2 s plus jitter, never the server's 2 s


def test_nothing_listening_fails_closed() -> None:
    with pytest.raises(StoreUnavailable), store_call():
        _client(f"http://127.0.0.1:{unused_port()}").get_item(TableName="t", Key={})


def test_no_credentials_fails_closed_without_sending(fake_ddb: WireServer) -> None:
    client = dynamodb_at(fake_ddb.url, credentials=CredentialSource(lambda: None))
    with pytest.raises(StoreUnavailable), store_call():
        client.get_item(TableName="t", Key={})
    assert fake_ddb.requests == []


def test_against_dynamodb_local(dynamodb_local: Any, fresh_tables: dict[str, str]) -> None:
    client = dynamodb_local.wire_client()
    table = fresh_tables["CountersTable"]
    key = {"pk": {"S": "wire#1"}}
    client.put_item(TableName=table, Item={**key, "n": {"N": "1"}})
    increment_below_2 = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": "SET n = n + :one",
        "ConditionExpression": "n < :cap",
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":cap": {"N": "2"}},
    }
    updated = client.update_item(**increment_below_2, ReturnValues="ALL_NEW")
    assert updated["Attributes"]["n"] == {"N": "2"}
    with pytest.raises(ConditionFailed) as caught, store_call():
        client.update_item(**increment_below_2, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert caught.value.item == {"pk": "wire#1", "n": 2}
    with pytest.raises(AwsServiceError) as missing:
        client.get_item(TableName="no-such-table", Key=key)
    assert missing.value.code == "ResourceNotFoundException"


def test_secrets_manager_get_secret_value() -> None:
    from bulwark.aws.clients import _wire_kwargs
    from bulwark.aws.wire import SecretsManagerClient

    server = secretsmanager.make({"bulwark/pepper": "x" * 40})
    try:
        kwargs = _wire_kwargs("secretsmanager", "SECRETS_MANAGER", read_timeout=2.0, max_attempts=2)
        kwargs.update(endpoint=Endpoint.parse(server.url), credentials=CREDS)
        client = SecretsManagerClient(target_prefix="secretsmanager", json_version="1.1", **kwargs)
        assert client.get_secret_value(SecretId="bulwark/pepper")["SecretString"] == "x" * 40
        with pytest.raises(AwsServiceError) as caught:
            client.get_secret_value(SecretId="missing")
        assert caught.value.code == "ResourceNotFoundException"
    finally:
        server.stop()


def _lambda_server() -> WireServer:
    def responder(request: Request) -> Reply:
        if "functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Aboom/" in request.path:
            error = {"errorMessage": "x", "errorType": "ValueError"}
            return Reply.json(error, headers={"X-Amz-Function-Error": "Unhandled"})
        if "/functions/missing/" in request.path:
            headers = {"x-amzn-ErrorType": "ResourceNotFoundException:http://internal.amazon.com/"}
            return Reply.json({"Type": "User", "message": "Function not found"}, 404, headers)
        return Reply.json({"echo": request.json(), "type": request.headers.get("x-amz-invocation-type")})

    return WireServer(responder).start()


def _lambda_client(url: str, max_attempts: int = 1) -> LambdaClient:
    return LambdaClient(
        service="lambda",
        endpoint=Endpoint.parse(url),
        region="us-east-1",
        credentials=CREDS,
        connect_timeout=1.0,
        read_timeout=2.0,
        max_attempts=max_attempts,
    )


def test_lambda_invoke_payload_function_errors_and_missing_functions() -> None:
    server = _lambda_server()
    try:
        client = _lambda_client(server.url, max_attempts=3)
        ok = client.invoke(FunctionName="invoker", Payload=b'{"a":1}')
        assert ok["StatusCode"] == 200 and "FunctionError" not in ok
        assert json.loads(ok["Payload"].read()) == {"echo": {"a": 1}, "type": "RequestResponse"}
        failed = client.invoke(FunctionName="arn:aws:lambda:us-east-1:1:function:boom", Payload=b"{}")
        assert failed["FunctionError"] == "Unhandled"
        with pytest.raises(AwsServiceError) as missing:
            client.invoke(FunctionName="missing", Payload=b"{}")
        assert missing.value.code == "ResourceNotFoundException" and missing.value.status == 404
        server.script(Reply(drop=True))  # on the kept-alive connection, after the request arrived
        with pytest.raises(AwsTransportError):  # never resent: the invoker may already be calling the model
            client.invoke(FunctionName="invoker", Payload=b"{}")
        assert len(server.requests) == 4
    finally:
        server.stop()


def test_endpoints_follow_the_sdk_variables() -> None:
    assert resolve_endpoint("DYNAMODB", "dynamodb", "eu-west-1", {}).host == "dynamodb.eu-west-1.amazonaws.com"
    fips = resolve_endpoint("DYNAMODB", "dynamodb", "us-east-1", {"AWS_USE_FIPS_ENDPOINT": "true"})
    assert fips.host == "dynamodb-fips.us-east-1.amazonaws.com"
    assert resolve_endpoint("LAMBDA", "lambda", "cn-north-1", {}).host == "lambda.cn-north-1.amazonaws.com.cn"
    local = resolve_endpoint(
        "DYNAMODB",
        "dynamodb",
        "us-east-1",
        {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8123", "AWS_ENDPOINT_URL": "x"},
    )
    assert (local.scheme, local.host, local.port) == ("http", "127.0.0.1:8123", 8123)
    ipv6 = Endpoint.parse("http://[::1]:8000")  # the Host header (and so the signature) keeps the brackets
    assert (ipv6.host, ipv6.hostname, ipv6.port) == ("[::1]:8000", "::1", 8000)
    assert Endpoint.parse("https://[fd00::1]").host == "[fd00::1]"
    with pytest.raises(ValueError):
        Endpoint.parse("ftp://example.com")


def test_calls_are_traced_as_aws_subsegments_and_the_trace_reaches_the_callee(fake_ddb: WireServer) -> None:
    from aws_xray_sdk.core.recorder import AWSXRayRecorder

    from bulwark.observability.tracing import trace_with

    class _Keep:  # an emitter that keeps what would go to the X-Ray daemon
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def send_entity(self, entity: Any) -> None:
            self.sent.append(entity)

        def set_daemon_address(self, address: Any) -> None:
            pass

    recorder = AWSXRayRecorder()
    recorder.configure(sampling=False, context_missing="LOG_ERROR", emitter=_Keep())
    lambda_server = _lambda_server()
    trace_with(recorder)
    try:
        segment = recorder.begin_segment("validator")
        _client(fake_ddb.url).update_item(TableName="t", Key={})
        lam = _lambda_client(lambda_server.url)
        lam.invoke(FunctionName="invoker", Payload=b"{}")
        names = [(sub.name, sub.namespace, sub.aws.get("operation")) for sub in segment.subsegments]
        recorder.end_segment()
    finally:
        trace_with(None)
        lambda_server.stop()
    assert names == [("DynamoDB", "aws", "UpdateItem"), ("Lambda", "aws", "Invoke")]
    (invoke,) = lambda_server.requests
    assert invoke.headers["x-amzn-trace-id"].startswith(f"Root={segment.trace_id};Parent=")
    assert "x-amzn-trace-id" not in invoke.headers["authorization"]  # never signed: AWS may rewrite it


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "AWS_CA_BUNDLE")


@pytest.fixture
def tls_ddb(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WireServer, str]]:
    """A DynamoDB-speaking server on TLS with a private CA that AWS_CA_BUNDLE names; no proxy variables set."""
    import ssl

    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    cert, key = _self_signed(tmp_path)
    server = WireServer(lambda request: _ddb_reply({"Item": {}}))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.start()
    monkeypatch.setenv("AWS_CA_BUNDLE", cert)
    yield server, f"https://127.0.0.1:{server.server_address[1]}"
    server.stop()


def test_tls_is_verified_and_a_private_ca_is_trusted_only_when_named(
    tls_ddb: tuple[WireServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = tls_ddb
    cert = os.environ["AWS_CA_BUNDLE"]
    monkeypatch.delenv("AWS_CA_BUNDLE")
    with pytest.raises(StoreUnavailable), store_call():  # an unknown certificate: fail closed, nothing sent
        dynamodb_at(url, credentials=CREDS).get_item(TableName="t", Key={})
    assert server.requests == []
    monkeypatch.setenv("AWS_CA_BUNDLE", cert)
    assert dynamodb_at(url, credentials=CREDS).get_item(TableName="t", Key={}) == {"Item": {}}


def test_https_proxy_tunnels_the_tls_and_sends_its_credentials(
    tls_ddb: tuple[WireServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = tls_ddb
    proxy = ConnectProxy()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://us%40er:p%3Ass@127.0.0.1:{proxy.port}")
        client = dynamodb_at(url, credentials=CREDS)
        assert client.get_item(TableName="t", Key={}) == {"Item": {}}
        assert client.get_item(TableName="t", Key={}) == {"Item": {}}
        port = server.server_address[1]
        # One tunnel for both requests (kept alive), to the endpoint, with the decoded credentials in Basic form.
        assert proxy.connects == [(f"127.0.0.1:{port}", "Basic dXNAZXI6cDpzcw==")]
        assert len(server.requests) == 2 and has_sigv4(server.requests[0])
    finally:
        proxy.close()


def test_no_proxy_bypasses_the_proxy(tls_ddb: tuple[WireServer, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _server, url = tls_ddb
    proxy = ConnectProxy()
    try:
        monkeypatch.setenv("https_proxy", f"127.0.0.1:{proxy.port}")
        monkeypatch.setenv("no_proxy", "example.com, 127.0.0.1")
        assert dynamodb_at(url, credentials=CREDS).get_item(TableName="t", Key={}) == {"Item": {}}
        assert proxy.connects == []
    finally:
        proxy.close()


def test_a_proxy_that_refuses_the_tunnel_fails_closed(
    tls_ddb: tuple[WireServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = tls_ddb
    proxy = ConnectProxy(status=407)
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(StoreUnavailable), store_call():
            dynamodb_at(url, credentials=CREDS).get_item(TableName="t", Key={})
        assert server.requests == []
        assert len(proxy.connects) == 2  # DynamoDB reads get one retry; the proxy refused both
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, ("proxy.corp", 3128, None)),
        ({"HTTPS_PROXY": "proxy.corp"}, ("proxy.corp", 80, None)),
        ({"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"}, ("a", 1, None)),
        ({"HTTPS_PROXY": "http://u:p@proxy:1"}, ("proxy", 1, "Basic dTpw")),
        ({"HTTPS_PROXY": "http://proxy:1", "NO_PROXY": "*"}, None),
        ({"HTTPS_PROXY": "http://proxy:1", "NO_PROXY": ".amazonaws.com"}, None),
        ({"HTTPS_PROXY": "http://proxy:1", "NO_PROXY": "*.AMAZONAWS.com"}, None),
        ({"HTTPS_PROXY": "http://proxy:1", "NO_PROXY": "us-east-1.amazonaws.com"}, None),
        ({"HTTPS_PROXY": "http://proxy:1", "NO_PROXY": "zonaws.com,example.com"}, ("proxy", 1, None)),
        ({"HTTP_PROXY": "http://proxy:1"}, None),  # an https endpoint uses HTTPS_PROXY only
    ],
)
def test_proxy_variables_are_read_as_the_sdk_reads_them(
    env: dict[str, str], expected: tuple[str, int, str | None] | None
) -> None:
    endpoint = Endpoint.parse("https://dynamodb.us-east-1.amazonaws.com")
    assert proxy_for(endpoint, env) == expected
    assert proxy_for(Endpoint.parse("http://127.0.0.1:8000"), env) is None  # plain http: local development, direct


@pytest.mark.parametrize("url", ["https://proxy:443", "socks5://proxy:1080"])
def test_a_proxy_bulwark_cannot_use_is_an_error_not_a_silent_direct_connection(url: str) -> None:
    with pytest.raises(ValueError, match="http:// proxy"):
        proxy_for(Endpoint.parse("https://dynamodb.us-east-1.amazonaws.com"), {"HTTPS_PROXY": url})
