"""The template model: the real template.yaml read as the local stack reads it, and each intrinsic function resolved."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bulwark_dev.local.template_model import TemplateError, load_template

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------- the project template


def test_real_template_routes_all_go_through_the_authorizer() -> None:
    model = load_template(ROOT / "template.yaml")
    api = model.apis["BulwarkApi"]
    routes = {(r.method, r.path): r for r in api.routes}
    assert ("POST", "/v1/chat/completions") in routes
    assert ("GET", "/v1/models") in routes
    assert all(r.authorizer == "BulwarkAuthorizer" and r.function == "ValidatorFunction" for r in routes.values())
    authorizer = api.authorizers["BulwarkAuthorizer"]
    assert authorizer.function == "AuthorizerFunction"
    assert authorizer.payload_type == "REQUEST"
    assert api.stage_name == model.parameters["StageName"]


def test_real_template_invoker_is_not_reachable_from_the_api() -> None:
    model = load_template(ROOT / "template.yaml")
    assert "InvokerFunction" in model.functions
    assert all(r.function != "InvokerFunction" for api in model.apis.values() for r in api.routes)


def test_real_template_environment_is_resolved_with_globals() -> None:
    model = load_template(ROOT / "template.yaml")
    validator = model.functions["ValidatorFunction"]
    env = validator.environment
    assert env["BULWARK_KEYS_TABLE"] == model.tables["KeysTable"].name
    assert env["BULWARK_COUNTERS_TABLE"] == model.tables["CountersTable"].name
    assert env["BULWARK_INVOKER_FUNCTION"] == model.functions["InvokerFunction"].name
    assert env["POWERTOOLS_SERVICE_NAME"] == "bulwark-validator"  # the function's own value merged with Globals
    assert "POWERTOOLS_LOG_LEVEL" in env
    assert validator.code_dir == ROOT / "functions" / "validator"
    assert validator.handler == "app.lambda_handler"
    assert validator.timeout == 900  # a streamed answer may last API Gateway's 15-minute stream limit


def test_real_template_authorizer_is_never_cached_by_api_gateway() -> None:
    # A cache key needs every identity source present (Authorization *and* x-api-key cannot both be), and API Gateway
    # would cache refusals too: docs/DEPLOY.md, "Why no authorizer cache".
    authorizer = load_template(ROOT / "template.yaml").apis["BulwarkApi"].authorizers["BulwarkAuthorizer"]
    assert authorizer.reauthorize_every == 0
    assert not authorizer.has_identity_sources


def test_real_template_tables_keep_their_definitions() -> None:
    model = load_template(ROOT / "template.yaml")
    for table in model.tables.values():
        assert table.properties["KeySchema"]
        assert table.properties["AttributeDefinitions"]


# ---------------------------------------------------------------------------------------------------- intrinsics

SYNTHETIC = """
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Parameters:
  Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  Required: {Type: String}
Mappings:
  Sizes: {dev: {Memory: 256}, prod: {Memory: 1024}}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsDev: !Not [!Condition IsProd]
Globals:
  Function:
    Runtime: python3.13
    Timeout: 10
    Layers: [!Ref Layer]
    Environment:
      Variables:
        SHARED: shared
        OVERRIDDEN: global
Resources:
  Layer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer/}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      BillingMode: PAY_PER_REQUEST
  ProdOnly:
    Type: AWS::DynamoDB::Table
    Condition: IsProd
    Properties: {KeySchema: []}
  Secret:
    Type: AWS::SecretsManager::Secret
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Timeout: 20
      MemorySize: !FindInMap [Sizes, !Ref Env, Memory]
      Environment:
        Variables:
          OVERRIDDEN: own
          TABLE: !Ref Table
          TABLE_ARN: !GetAtt Table.Arn
          SECRET: !Ref Secret
          SUB: !Sub "${AWS::Region}|${Table}|${Fn.Arn}|${!Literal}"
          SUB_LIST: !Sub ["${A}-${B}", {A: x, B: !Ref Env}]
          JOINED: !Join [":", [!Select [1, !Ref Names], !Select [0, !Split ["/", "p/q"]]]]
          CHOSEN: !If [IsProd, production, development]
          DEV: !If [IsDev, true, false]
          GONE: !If [IsProd, here, !Ref AWS::NoValue]
          REQUIRED: !Ref Required
          SELF_NAME: !Ref Fn
"""


def _write(tmp_path: Path, text: str = SYNTHETIC) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_intrinsics_resolve_as_cloudformation_would(tmp_path: Path) -> None:
    model = load_template(_write(tmp_path), parameter_overrides={"Required": "r"}, stack_name="s")
    fn = model.functions["Fn"]
    env = fn.environment
    assert env["SHARED"] == "shared"
    assert env["OVERRIDDEN"] == "own"
    assert env["TABLE"] == "s-Table"
    assert env["TABLE_ARN"] == "arn:aws:dynamodb:us-east-1:000000000000:table/s-Table"
    assert env["SECRET"].startswith("arn:aws:secretsmanager:us-east-1:000000000000:secret:")
    assert env["SUB"] == "us-east-1|s-Table|arn:aws:lambda:us-east-1:000000000000:function:s-Fn|${Literal}"
    assert env["SUB_LIST"] == "x-dev"
    assert env["JOINED"] == "b:p"
    assert env["CHOSEN"] == "development"
    assert env["DEV"] == "true"
    assert "GONE" not in env
    assert env["REQUIRED"] == "r"
    assert env["SELF_NAME"] == "s-Fn"
    assert fn.timeout == 20
    assert fn.memory_size == 256
    assert fn.code_dir == tmp_path / "src"
    assert "ProdOnly" not in model.tables


def test_conditions_follow_parameter_overrides(tmp_path: Path) -> None:
    model = load_template(_write(tmp_path), parameter_overrides={"Required": "r", "Env": "prod"})
    env = model.functions["Fn"].environment
    assert env["CHOSEN"] == "production"
    assert env["GONE"] == "here"
    assert model.functions["Fn"].memory_size == 1024
    assert "ProdOnly" in model.tables


def test_missing_parameter_is_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="Required"):
        load_template(_write(tmp_path))


def test_disallowed_and_undeclared_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="Env"):
        load_template(_write(tmp_path), parameter_overrides={"Required": "r", "Env": "staging"})
    with pytest.raises(TemplateError, match="Nope"):
        load_template(_write(tmp_path), parameter_overrides={"Required": "r", "Nope": "1"})


def test_unknown_reference_is_an_error(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("SELF_NAME: !Ref Fn", "SELF_NAME: !Ref Missing")
    with pytest.raises(TemplateError, match="Missing"):
        load_template(_write(tmp_path, text), parameter_overrides={"Required": "r"})


def test_unsupported_intrinsic_is_named(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("SELF_NAME: !Ref Fn", "SELF_NAME: !ImportValue other-stack-output")
    with pytest.raises(TemplateError, match="ImportValue"):
        load_template(_write(tmp_path, text), parameter_overrides={"Required": "r"})


def test_gateway_responses_identity_sources_and_open_routes(tmp_path: Path) -> None:
    text = """
    Resources:
      Api:
        Type: AWS::Serverless::Api
        Properties:
          StageName: prod
          Auth:
            DefaultAuthorizer: Lambda
            Authorizers:
              Lambda:
                FunctionArn: !GetAtt AuthFn.Arn
                FunctionPayloadType: REQUEST
                Identity: {Headers: [Authorization], QueryStrings: [tenant]}
          GatewayResponses:
            UNAUTHORIZED:
              StatusCode: 401
              ResponseParameters: {Headers: {WWW-Authenticate: "'Bearer realm=x'"}}
              ResponseTemplates: {application/json: '{"id": "$context.requestId"}'}
      AuthFn:
        Type: AWS::Serverless::Function
        Properties: {CodeUri: a/, Handler: app.handler, Runtime: python3.13}
      Fn:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: b/
          Handler: app.handler
          Runtime: python3.13
          Events:
            Closed: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /x, Method: get}}
            Open: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /health, Method: GET, Auth: {Authorizer: NONE}}}
            Implicit: {Type: Api, Properties: {Path: /implicit, Method: POST}}
    """
    model = load_template(_write(tmp_path, text))
    api = model.apis["Api"]
    authorizer = api.authorizers["Lambda"]
    assert authorizer.identity_headers == ("Authorization",)
    assert authorizer.identity_query_strings == ("tenant",)
    assert authorizer.reauthorize_every == 300  # API Gateway's default TTL
    routes = {r.path: r for r in api.routes}
    assert routes["/x"].method == "GET"
    assert routes["/x"].authorizer == "Lambda"
    assert routes["/health"].authorizer is None
    response = api.gateway_responses["UNAUTHORIZED"]
    assert response.status_code == 401
    assert response.headers == {"WWW-Authenticate": "Bearer realm=x"}
    implicit = model.apis["ServerlessRestApi"]
    assert implicit.stage_name == "Prod"
    assert [r.path for r in implicit.routes] == ["/implicit"]
    assert model.function_by_name("bulwark-local-Fn") == model.functions["Fn"]
    assert model.function_by_name(model.functions["AuthFn"].arn) == model.functions["AuthFn"]
