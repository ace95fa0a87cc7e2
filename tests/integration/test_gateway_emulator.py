"""The API Gateway emulator and Lambda workers, with tiny handlers and a tiny template written here.

Covers: route matching (literal, {param}, method), 404/405 in the contract shape, the REQUEST authorizer event, the
authorizer context reaching the integration, the result cache TTL, Allow/Deny/Unauthorized/crash mapping, IAM policy
ARN matching (a cached Allow for one route never opens another), proxy response mapping, limits, x-request-id,
keep-alive, and a handler calling another function through boto3's real Lambda client.
"""

from __future__ import annotations

import http.client
import json
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bulwark_dev.local.gateway import ApiGatewayEmulator, policy_allows
from bulwark_dev.local.stack import FunctionFleet
from bulwark_dev.local.template_model import TemplateModel, load_template

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  CacheTtl: {Type: Number, Default: 0}
  CallsFile: {Type: String, Default: unset}
Globals:
  Function:
    Runtime: python3.13
    Timeout: 5
    MemorySize: 128
    Environment:
      Variables:
        CALLS_FILE: !Ref CallsFile
Resources:
  TestApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: test
      Auth:
        DefaultAuthorizer: TokenCheck
        Authorizers:
          TokenCheck:
            FunctionArn: !GetAtt AuthFn.Arn
            FunctionPayloadType: REQUEST
            Identity:
              ReauthorizeEvery: !Ref CacheTtl
  AuthFn:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: auth/, Handler: app.handler}
  CalleeFn:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: callee/, Handler: app.handler}
  EchoFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Environment:
        Variables:
          CALLEE: !Ref CalleeFn
      Events:
        ListItems: {Type: Api, Properties: {RestApiId: !Ref TestApi, Path: /items, Method: GET}}
        AddItem: {Type: Api, Properties: {RestApiId: !Ref TestApi, Path: /items, Method: POST}}
        GetItem: {Type: Api, Properties: {RestApiId: !Ref TestApi, Path: "/items/{id}", Method: GET}}
        Special: {Type: Api, Properties: {RestApiId: !Ref TestApi, Path: /items/special, Method: GET}}
        Open:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /open, Method: ANY, Auth: {Authorizer: NONE}}
"""

AUTHORIZER = """
import json, os

def handler(event, context):
    with open(os.environ["CALLS_FILE"], "a") as calls:
        calls.write(json.dumps(event) + "\\n")
    token = event["headers"].get("authorization") or event["headers"].get("Authorization") or ""
    arn = event["methodArn"]
    api_base = arn.split("/")[0]  # arn:aws:execute-api:region:account:apiId
    stage = arn.split("/")[1]

    def policy(effect, resource, extra=()):
        statements = [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}, *extra]
        return {
            "principalId": "user-1",
            "policyDocument": {"Version": "2012-10-17", "Statement": statements},
            "context": {"tenant": "t1", "n": 3, "flag": True},
        }

    if token == "allow-all":
        return policy("Allow", f"{api_base}/*")
    if token == "allow-list-only":
        return policy("Allow", f"{api_base}/{stage}/GET/items")
    if token == "allow-one-char":
        return policy("Allow", [f"{api_base}/{stage}/GET/items/?"])
    if token == "deny":
        return policy("Deny", f"{api_base}/*")
    if token == "deny-wins":
        deny = {"Action": "execute-api:*", "Effect": "Deny", "Resource": f"{api_base}/*/GET/items/*"}
        return policy("Allow", f"{api_base}/*", [deny])
    if token == "crash":
        raise RuntimeError("authorizer bug")
    if token == "garbage":
        return "not a policy"
    if token == "slow":
        import time
        time.sleep(10)
    raise Exception("Unauthorized")
"""

ECHO = """
import json, os, time

import boto3

lambda_client = boto3.client("lambda")  # created once per container, as the real handlers do

def handler(event, context):
    query = event.get("queryStringParameters") or {}
    mode = query.get("mode")
    if mode == "crash":
        raise ValueError("integration bug")
    if mode == "malformed":
        return {"statusCode": 200, "body": {"not": "a string"}}
    if mode == "unknown-key":
        return {"statusCode": 200, "body": "x", "cookies": []}
    if mode == "slow":
        time.sleep(float(query.get("seconds", "2")))
    if mode == "binary":
        return {"statusCode": 200, "body": "AAEC/w==", "isBase64Encoded": True,
                "headers": {"Content-Type": "application/octet-stream"}}
    if mode == "chain":
        ok = lambda_client.invoke(FunctionName=os.environ["CALLEE"], Payload=json.dumps({"x": 1}))
        bad = lambda_client.invoke(FunctionName=os.environ["CALLEE"], Payload=json.dumps({"raise": True}))
        body = {
            "ok": json.loads(ok["Payload"].read()),
            "ok_status": ok["StatusCode"],
            "bad_error": bad.get("FunctionError"),
            "bad": json.loads(bad["Payload"].read()),
        }
        return {"statusCode": 200, "body": json.dumps(body)}
    return {
        "statusCode": 201,
        "headers": {"x-echo": "1", "Content-Type": "application/json"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps({"event": event, "function": context.function_name,
                            "remaining_ms": context.get_remaining_time_in_millis()}),
    }
"""

CALLEE = """
def handler(event, context):
    if event.get("raise"):
        raise KeyError("missing thing")
    return {"got": event, "name": context.function_name}
"""


def _write_project(root: Path) -> Path:
    for folder, source in (("auth", AUTHORIZER), ("echo", ECHO), ("callee", CALLEE)):
        (root / folder).mkdir()
        (root / folder / "app.py").write_text(textwrap.dedent(source))
    template = root / "template.yaml"
    template.write_text(TEMPLATE)
    return template


class Harness:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls_file = root / "calls.jsonl"
        self.template_path = _write_project(root)
        self.access: list[dict[str, Any]] = []
        self.lines: list[tuple[str, str, str]] = []
        base = self.model(ttl=0)
        self.fleet = FunctionFleet(base, on_line=lambda *line: self.lines.append(line))
        self.fleet.start()
        self.gateways: list[ApiGatewayEmulator] = []

    def model(self, ttl: int) -> TemplateModel:
        overrides = {"CacheTtl": str(ttl), "CallsFile": str(self.calls_file)}
        return load_template(self.template_path, parameter_overrides=overrides)

    def gateway(self, ttl: int = 0, integration_timeout: float = 29.0) -> ApiGatewayEmulator:
        model = self.model(ttl)
        gateway = ApiGatewayEmulator(
            model.apis["TestApi"],
            self.fleet.invoke,
            function_timeouts={k: float(f.timeout) for k, f in model.functions.items()},
            access_log=self.access.append,
            integration_timeout=integration_timeout,
        )
        gateway.start()
        self.gateways.append(gateway)
        return gateway

    def authorizer_calls(self) -> list[dict[str, Any]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        self.fleet.stop()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("gateway"))
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def gateway(harness: Harness) -> ApiGatewayEmulator:
    return harness.gateway(ttl=0)


def _error(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": token}


# ----------------------------------------------------------------------------------------------------------- routes


def test_unknown_route_is_404_in_contract_shape(gateway: ApiGatewayEmulator) -> None:
    response = requests.get(f"{gateway.base_url}/nothing/here", headers=_auth("allow-all"), timeout=10)
    assert response.status_code == 404
    assert _error(response) == {
        "message": "No route matches this request.",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
    assert response.headers["x-request-id"]


def test_wrong_method_is_405_with_allow(gateway: ApiGatewayEmulator) -> None:
    response = requests.delete(f"{gateway.base_url}/items", headers=_auth("allow-all"), timeout=10)
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, POST"


def test_literal_route_wins_over_parameter(gateway: ApiGatewayEmulator) -> None:
    special = requests.get(f"{gateway.base_url}/items/special", headers=_auth("allow-all"), timeout=10).json()
    assert special["event"]["resource"] == "/items/special"
    assert special["event"]["pathParameters"] is None
    other = requests.get(f"{gateway.base_url}/items/42", headers=_auth("allow-all"), timeout=10).json()
    assert other["event"]["resource"] == "/items/{id}"
    assert other["event"]["pathParameters"] == {"id": "42"}


def test_open_route_skips_the_authorizer(harness: Harness, gateway: ApiGatewayEmulator) -> None:
    before = len(harness.authorizer_calls())
    response = requests.patch(f"{gateway.base_url}/open", timeout=10)
    assert response.status_code == 201
    assert "authorizer" not in response.json()["event"]["requestContext"]
    assert len(harness.authorizer_calls()) == before


# ------------------------------------------------------------------------------------------------------- authorizer


def test_authorizer_event_has_api_gateway_request_shape(harness: Harness, gateway: ApiGatewayEmulator) -> None:
    response = requests.get(
        f"{gateway.base_url}/items/7?b=1&b=2&c=x",
        headers={**_auth("allow-all"), "X-Multi": "one"},
        timeout=10,
    )
    assert response.status_code == 201
    event = harness.authorizer_calls()[-1]
    api_id = gateway.api.api_id
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == f"arn:aws:execute-api:us-east-1:000000000000:{api_id}/test/GET/items/7"
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/7"
    assert event["httpMethod"] == "GET"
    assert event["headers"]["Authorization"] == "allow-all"
    assert event["multiValueHeaders"]["X-Multi"] == ["one"]
    assert event["queryStringParameters"] == {"b": "2", "c": "x"}
    assert event["multiValueQueryStringParameters"] == {"b": ["1", "2"], "c": ["x"]}
    assert event["pathParameters"] == {"id": "7"}
    assert event["stageVariables"] is None
    context = event["requestContext"]
    assert context["requestId"] == response.headers["x-request-id"]
    assert context["stage"] == "test"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["resourcePath"] == "/items/{id}"
    assert context["httpMethod"] == "GET"
    assert context["apiId"] == api_id
    assert context["accountId"] == "000000000000"


def test_authorizer_context_reaches_the_integration(gateway: ApiGatewayEmulator) -> None:
    response = requests.post(f"{gateway.base_url}/items", headers=_auth("allow-all"), data=b'{"a": 1}', timeout=10)
    assert response.status_code == 201
    payload = response.json()
    event = payload["event"]
    authorizer = event["requestContext"]["authorizer"]
    assert authorizer["principalId"] == "user-1"
    assert authorizer["tenant"] == "t1"
    assert authorizer["n"] == "3"  # REST APIs stringify context values
    assert authorizer["flag"] == "true"
    assert isinstance(authorizer["integrationLatency"], int)
    assert event["body"] == '{"a": 1}'
    assert event["isBase64Encoded"] is False
    assert event["queryStringParameters"] is None
    assert event["requestContext"]["requestId"] == response.headers["x-request-id"]
    assert payload["function"] == "bulwark-local-EchoFn"
    assert 0 < payload["remaining_ms"] <= 5000


def test_unauthorized_is_401_with_www_authenticate(gateway: ApiGatewayEmulator) -> None:
    response = requests.get(f"{gateway.base_url}/items", headers=_auth("wrong"), timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert _error(response)["type"] == "authentication_error"
    assert _error(response)["code"] == "invalid_credentials"


def test_deny_is_403(gateway: ApiGatewayEmulator) -> None:
    response = requests.get(f"{gateway.base_url}/items", headers=_auth("deny"), timeout=10)
    assert response.status_code == 403
    assert _error(response)["type"] == "permission_error"


def test_explicit_deny_wins_over_allow(gateway: ApiGatewayEmulator) -> None:
    assert requests.get(f"{gateway.base_url}/items", headers=_auth("deny-wins"), timeout=10).status_code == 201
    assert requests.get(f"{gateway.base_url}/items/1", headers=_auth("deny-wins"), timeout=10).status_code == 403


def test_question_mark_matches_exactly_one_character(gateway: ApiGatewayEmulator) -> None:
    assert requests.get(f"{gateway.base_url}/items/1", headers=_auth("allow-one-char"), timeout=10).status_code == 201
    assert requests.get(f"{gateway.base_url}/items/12", headers=_auth("allow-one-char"), timeout=10).status_code == 403


@pytest.mark.parametrize("token", ["crash", "garbage"])
def test_authorizer_failure_is_500(gateway: ApiGatewayEmulator, token: str) -> None:
    response = requests.get(f"{gateway.base_url}/items", headers=_auth(token), timeout=10)
    assert response.status_code == 500
    assert _error(response)["type"] == "service_unavailable"
    assert "authorizer bug" not in response.text


def test_cache_ttl_calls_authorizer_once_within_ttl_and_again_after(harness: Harness) -> None:
    cached = harness.gateway(ttl=1)
    before = len(harness.authorizer_calls())
    for _ in range(3):
        assert requests.get(f"{cached.base_url}/items", headers=_auth("allow-all"), timeout=10).status_code == 201
    assert len(harness.authorizer_calls()) == before + 1
    time.sleep(1.2)
    assert requests.get(f"{cached.base_url}/items", headers=_auth("allow-all"), timeout=10).status_code == 201
    assert len(harness.authorizer_calls()) == before + 2
    assert [e for e in harness.access if e.get("authorizer") == "cached"]


def test_cached_allow_for_one_route_does_not_open_another(harness: Harness) -> None:
    cached = harness.gateway(ttl=30)
    before = len(harness.authorizer_calls())
    assert requests.get(f"{cached.base_url}/items", headers=_auth("allow-list-only"), timeout=10).status_code == 201
    response = requests.post(f"{cached.base_url}/items", headers=_auth("allow-list-only"), timeout=10)
    assert response.status_code == 403
    assert len(harness.authorizer_calls()) == before + 1  # the second decision came from the cache
    other_key = requests.get(f"{cached.base_url}/items", headers=_auth("deny"), timeout=10)
    assert other_key.status_code == 403  # the cache key is the credential: another key is decided afresh


def test_authorizer_timeout_is_500(harness: Harness) -> None:
    model = harness.model(ttl=0)
    quick = ApiGatewayEmulator(
        model.apis["TestApi"], harness.fleet.invoke, function_timeouts={"AuthFn": 0.5}, access_log=None
    )
    quick.start()
    try:
        response = requests.get(f"{quick.base_url}/items", headers=_auth("slow"), timeout=10)
    finally:
        quick.stop()
    assert response.status_code == 500


# ------------------------------------------------------------------------------------------------------ integration


def test_proxy_response_headers_status_and_multi_value(gateway: ApiGatewayEmulator) -> None:
    response = requests.get(f"{gateway.base_url}/items", headers=_auth("allow-all"), timeout=10)
    assert response.status_code == 201
    assert response.headers["x-echo"] == "1"
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_base64_bodies_both_ways(gateway: ApiGatewayEmulator) -> None:
    raw = bytes([0xFF, 0xFE, 0x00])
    sent = requests.post(f"{gateway.base_url}/items", headers=_auth("allow-all"), data=raw, timeout=10).json()
    assert sent["event"]["isBase64Encoded"] is True
    assert sent["event"]["body"] == "//4A"
    binary = requests.get(f"{gateway.base_url}/items?mode=binary", headers=_auth("allow-all"), timeout=10)
    assert binary.content == bytes([0, 1, 2, 255])


@pytest.mark.parametrize("mode", ["crash", "malformed", "unknown-key"])
def test_integration_failure_is_502(gateway: ApiGatewayEmulator, mode: str) -> None:
    response = requests.get(f"{gateway.base_url}/items?mode={mode}", headers=_auth("allow-all"), timeout=10)
    assert response.status_code == 502
    assert _error(response)["message"] == "Internal server error"
    assert "integration bug" not in response.text


def test_integration_timeout_is_504(harness: Harness) -> None:
    quick = harness.gateway(integration_timeout=0.5)
    response = requests.get(f"{quick.base_url}/items?mode=slow&seconds=1.5", headers=_auth("allow-all"), timeout=10)
    assert response.status_code == 504
    assert _error(response)["code"] == "upstream_timeout"


def test_payload_over_10_mb_is_413(gateway: ApiGatewayEmulator) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: x\r\nAuthorization: allow-all\r\n"
            + f"Content-Length: {10 * 1024 * 1024 + 1}\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert "x-request-id:" in answer
    assert "request_too_large" in answer


def test_handler_calls_another_function_through_boto3(gateway: ApiGatewayEmulator) -> None:
    response = requests.get(f"{gateway.base_url}/items?mode=chain", headers=_auth("allow-all"), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] == {"got": {"x": 1}, "name": "bulwark-local-CalleeFn"}
    assert body["ok_status"] == 200
    assert body["bad_error"] == "Unhandled"
    assert body["bad"]["errorType"] == "KeyError"
    assert body["bad"]["errorMessage"] == "'missing thing'"


# --------------------------------------------------------------------------------------------------------- transport


def test_every_response_has_a_unique_request_id(gateway: ApiGatewayEmulator) -> None:
    ids = set()
    for url, token in [
        ("/items", "allow-all"),
        ("/items", "wrong"),
        ("/nope", "x"),
        ("/items?mode=crash", "allow-all"),
    ]:
        response = requests.get(f"{gateway.base_url}{url}", headers=_auth(token), timeout=10)
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 4


def test_keep_alive_serves_many_requests_on_one_connection(gateway: ApiGatewayEmulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("GET", "/items", headers=_auth("allow-all"))
        conn.getresponse().read()
        first_socket = conn.sock
        for path in ["/items/1", "/nothing", "/items?mode=crash", "/items"]:
            conn.request("GET", path, headers=_auth("allow-all"))
            response = conn.getresponse()
            response.read()
            assert response.getheader("x-request-id")
            assert conn.sock is first_socket
    finally:
        conn.close()


def test_access_log_never_holds_the_query_or_credential(harness: Harness, gateway: ApiGatewayEmulator) -> None:
    requests.get(f"{gateway.base_url}/items?api_key=secret-in-query", headers=_auth("allow-all"), timeout=10)
    logged = json.dumps(harness.access)
    assert "secret-in-query" not in logged
    assert "allow-all" not in logged


def test_worker_reports_peak_rss(harness: Harness) -> None:
    stats = harness.fleet.stats()
    assert set(stats) == {"AuthFn", "EchoFn", "CalleeFn"}
    assert all(s["peak_rss_kb"] >= s["rss_kb"] > 1000 and s["pid"] > 0 for s in stats.values())


# ------------------------------------------------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    ("resource", "arn", "allowed"),
    [
        ("arn:aws:execute-api:us-east-1:1:api/*", "arn:aws:execute-api:us-east-1:1:api/s/GET/a/b", True),
        ("arn:aws:execute-api:us-east-1:1:api/s/GET/a", "arn:aws:execute-api:us-east-1:1:api/s/GET/a/b", False),
        ("arn:aws:execute-api:us-east-1:1:api/s/*/a", "arn:aws:execute-api:us-east-1:1:api/s/POST/a", True),
        ("arn:aws:execute-api:us-east-1:1:api/s/G?T/a", "arn:aws:execute-api:us-east-1:1:api/s/GET/a", True),
        ("arn:aws:execute-api:us-east-1:1:other/*", "arn:aws:execute-api:us-east-1:1:api/s/GET/a", False),
        ("*", "arn:aws:execute-api:us-east-1:1:api/s/GET/a", True),
    ],
)
def test_policy_resource_wildcards(resource: str, arn: str, allowed: bool) -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": resource}]}
    assert policy_allows(policy, arn) is allowed


def test_policy_needs_a_matching_action() -> None:
    arn = "arn:aws:execute-api:us-east-1:1:api/s/GET/a"
    assert not policy_allows({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}, arn)
    assert policy_allows({"Statement": {"Effect": "Allow", "Action": ["execute-api:*"], "Resource": "*"}}, arn)
    assert not policy_allows({"Statement": []}, arn)
