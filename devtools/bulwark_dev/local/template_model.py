"""Read ``template.yaml`` (SAM + CloudFormation) into what the local stack needs, resolving intrinsic functions.

This is the only place the local stack learns its configuration: routes, the authorizer, functions, environment and
tables all come from the template, so local cannot drift from what is deployed. Physical names are local stand-ins:
``<stack>-<LogicalId>`` for tables and functions, fake ARNs in account 000000000000, region us-east-1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field

LOCAL_REGION: Final = "us-east-1"
LOCAL_ACCOUNT: Final = "000000000000"
DEFAULT_STACK_NAME: Final = "bulwark-local"
IMPLICIT_API_ID: Final = "ServerlessRestApi"  # SAM's logical id for events without RestApiId
# API Gateway's default authorizer result TTL when a template names an authorizer without ReauthorizeEvery.
DEFAULT_AUTHORIZER_TTL: Final = 300

_FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
_TABLE_TYPES = ("AWS::DynamoDB::Table",)
_API_TYPES = ("AWS::Serverless::Api", "AWS::ApiGateway::RestApi")


class TemplateError(ValueError):
    """The template cannot be read or uses something the local stack cannot resolve; the message names it."""


# --------------------------------------------------------------------------------------------------------------- YAML


# libyaml's parser where PyYAML was built with it (its wheels are): a stack start reads the template three times (the
# functions, the roles, AppConfig) and the pure-Python parser took ~170 ms a time against ~30 ms. Same safe constructor.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CfnLoader(_SafeBase):  # type: ignore[valid-type,misc]
    """SafeLoader plus CloudFormation's short-form tags; dates stay strings as CloudFormation reads them."""


_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_cfn_tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from exc
    return parse_template_text(text, str(path))


def parse_template_text(text: str, source: str = "<template>") -> dict[str, Any]:
    """A template's YAML, CloudFormation tags included (``source`` names it in errors)."""
    try:
        # _CfnLoader is a SafeLoader subclass (it only adds the CloudFormation tags).
        data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506  # nosec B506
    except yaml.YAMLError as exc:
        raise TemplateError(f"cannot read template {source}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{source} is not a CloudFormation template (no Resources mapping)")
    return data


# ------------------------------------------------------------------------------------------------------------ models


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FunctionSpec(_Frozen):
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # "module.attr", e.g. "app.lambda_handler"
    runtime: str
    timeout: int  # seconds
    memory_size: int  # MB
    environment: dict[str, str]
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions; None when unreserved
    log_group: str = ""  # where its lines go: LoggingConfig.LogGroup, else Lambda's /aws/lambda/<name>


class TableSpec(_Frozen):
    logical_id: str
    name: str
    properties: dict[str, Any]  # resolved AWS::DynamoDB::Table Properties


class AuthorizerSpec(_Frozen):
    name: str
    function: str  # logical id of the authorizer function
    payload_type: str  # REQUEST or TOKEN
    identity_headers: tuple[str, ...] = ()
    identity_query_strings: tuple[str, ...] = ()
    identity_stage_variables: tuple[str, ...] = ()
    identity_context: tuple[str, ...] = ()
    token_header: str = "Authorization"  # noqa: S105 - a header name; TOKEN authorizers only
    validation_expression: str | None = None  # TOKEN authorizers only
    reauthorize_every: int = DEFAULT_AUTHORIZER_TTL

    @property
    def has_identity_sources(self) -> bool:
        return bool(
            self.identity_headers
            or self.identity_query_strings
            or self.identity_stage_variables
            or self.identity_context
        )


class RouteSpec(_Frozen):
    event: str
    method: str  # upper case, or ANY
    path: str  # API Gateway resource path, e.g. /v1/models/{model}/invoke
    function: str  # logical id of the integration function
    authorizer: str | None  # authorizer name, None when the route is open (Auth.Authorizer: NONE or no default)
    stream: bool = False  # ResponseTransferMode RESPONSE_STREAM: InvokeWithResponseStream, body sent as it comes


class GatewayResponseSpec(_Frozen):
    status_code: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    templates: dict[str, str] = Field(default_factory=dict)  # content type -> body template


class ApiSpec(_Frozen):
    logical_id: str
    api_id: str
    stage_name: str
    authorizers: dict[str, AuthorizerSpec]
    routes: tuple[RouteSpec, ...]
    gateway_responses: dict[str, GatewayResponseSpec]


class QueryDefinitionSpec(_Frozen):
    """A saved Logs Insights query (AWS::Logs::QueryDefinition), its name and log groups resolved."""

    logical_id: str
    name: str
    query_string: str
    log_group_names: tuple[str, ...]


class TemplateModel(_Frozen):
    path: Path
    stack_name: str
    parameters: dict[str, Any]
    functions: dict[str, FunctionSpec]
    tables: dict[str, TableSpec]
    apis: dict[str, ApiSpec]
    query_definitions: tuple[QueryDefinitionSpec, ...] = ()

    @property
    def table_names(self) -> dict[str, str]:
        return {logical_id: table.name for logical_id, table in self.tables.items()}

    def function_by_name(self, name_or_arn: str) -> FunctionSpec | None:
        """Find a function as the Lambda API does: by name, full ARN or partial ARN (``function:name``)."""
        for function in self.functions.values():
            if name_or_arn in (function.name, function.arn) or name_or_arn.endswith(f"function:{function.name}"):
                return function
        return None


# ----------------------------------------------------------------------------------------------------------- resolver


class _NoValue:
    """AWS::NoValue: the key or list item that holds it disappears."""


NO_VALUE: Final = _NoValue()


def _key_id(seed: str) -> str:
    # A KMS key id is a UUID; derived from the logical id so the ARN is stable across runs.
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _short_id(seed: str) -> str:
    # Deterministic, API-Gateway-looking id (10 lowercase alphanumerics) so ARNs are stable across runs.
    return base64.b32encode(hashlib.sha256(seed.encode()).digest()).decode().lower()[:10]


class _Resolver:
    def __init__(self, raw: dict[str, Any], parameters: dict[str, Any], stack_name: str) -> None:
        self.raw = raw
        self.resources: dict[str, Any] = raw["Resources"]
        self.parameters = parameters
        self.stack_name = stack_name
        self._conditions: dict[str, bool] = {}

    # physical names -------------------------------------------------------------------------------------------------
    def _type(self, logical_id: str) -> str:
        resource = self.resources.get(logical_id)
        if not isinstance(resource, dict):
            raise TemplateError(f"reference to unknown resource or parameter {logical_id!r}")
        if "Condition" in resource and not self.condition(resource["Condition"]):
            raise TemplateError(f"reference to {logical_id!r}, which its Condition leaves out")
        return str(resource.get("Type", ""))

    def _explicit_name(self, logical_id: str, key: str) -> str | None:
        value = self.resources[logical_id].get("Properties", {}).get(key)
        return None if value is None else str(self.resolve(value))

    def physical_name(self, logical_id: str) -> str:
        kind = self._type(logical_id)
        if kind in _TABLE_TYPES:
            return self._explicit_name(logical_id, "TableName") or f"{self.stack_name}-{logical_id}"
        if kind in _FUNCTION_TYPES:
            return self._explicit_name(logical_id, "FunctionName") or f"{self.stack_name}-{logical_id}"
        return f"{self.stack_name}-{logical_id}"

    def arn(self, logical_id: str) -> str:
        kind = self._type(logical_id)
        name = self.physical_name(logical_id)
        prefix = f"arn:aws:{{}}:{LOCAL_REGION}:{LOCAL_ACCOUNT}"
        if kind in _FUNCTION_TYPES:
            return f"{prefix.format('lambda')}:function:{name}"
        if kind in _TABLE_TYPES:
            return f"{prefix.format('dynamodb')}:table/{name}"
        if kind == "AWS::SecretsManager::Secret":
            return f"{prefix.format('secretsmanager')}:secret:{name}"
        if kind == "AWS::Serverless::LayerVersion":
            return f"{prefix.format('lambda')}:layer:{name}:1"
        # The shapes IAM matches resources against (the local stack enforces the roles, local/iam_roles.py).
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{name}"
        if kind == "AWS::Logs::LogGroup":
            group = self._explicit_name(logical_id, "LogGroupName") or name
            return f"{prefix.format('logs')}:log-group:{group}:*"
        if kind == "AWS::KMS::Key":
            return f"{prefix.format('kms')}:key/{_key_id(f'{self.stack_name}/{logical_id}')}"
        if kind == "AWS::SQS::Queue":
            return f"{prefix.format('sqs')}:{name}"
        service = kind.split("::")[1].lower() if kind.count("::") == 2 else "local"
        return f"{prefix.format(service)}:{name}"

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": LOCAL_REGION,
            "AWS::AccountId": LOCAL_ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{LOCAL_REGION}:{LOCAL_ACCOUNT}:stack/{self.stack_name}/local",
            "AWS::NotificationARNs": [],
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self._type(name)
        if kind in _TABLE_TYPES or kind in _FUNCTION_TYPES:
            return self.physical_name(name)
        if kind in _API_TYPES:
            return _short_id(f"{self.stack_name}/{name}")
        if kind in ("AWS::SecretsManager::Secret", "AWS::Serverless::LayerVersion", "AWS::SNS::Topic"):
            return self.arn(name)  # CloudFormation's Ref of these is their ARN
        if kind == "AWS::KMS::Key":
            return self.arn(name).rsplit("/", 1)[1]  # Ref of a key is its key id
        if kind == "AWS::Logs::LogGroup":
            return self._explicit_name(name, "LogGroupName") or self.physical_name(name)
        return self.physical_name(name)

    def get_att(self, logical_id: str, attribute: str) -> Any:
        kind = self._type(logical_id)
        if attribute == "Arn":
            return self.arn(logical_id)
        if attribute == "StreamArn" and kind in _TABLE_TYPES:
            return f"{self.arn(logical_id)}/stream/local"
        if attribute == "RootResourceId" and kind in _API_TYPES:
            return "root"
        return f"{self.physical_name(logical_id)}.{attribute}"

    def function_logical_id_for_arn(self, arn: str) -> str:
        for logical_id, resource in self.resources.items():
            if not isinstance(resource, dict) or resource.get("Type") not in _FUNCTION_TYPES:
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            if self.arn(logical_id) == arn:
                return logical_id
        raise TemplateError(f"authorizer FunctionArn {arn!r} is not a function in this template")

    # conditions -----------------------------------------------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.raw.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    # intrinsics -----------------------------------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _function(self, name: str, arg: Any) -> Any:
        if name == "GetAtt":
            if isinstance(arg, str):
                arg = arg.split(".", 1)
            resource, attribute = self.resolve(arg)
            return self.get_att(str(resource), str(attribute))
        if name == "Sub":
            return self._sub(arg)
        if name == "If":
            condition, if_true, if_false = arg
            return self.resolve(if_true if self.condition(condition) else if_false)
        if name == "Equals":
            left, right = self.resolve(arg)
            return str(left) == str(right)
        if name == "Not":
            (inner,) = self.resolve(arg)
            return not inner
        if name == "And":
            return all(self.resolve(arg))
        if name == "Or":
            return any(self.resolve(arg))
        if name == "Join":
            delimiter, items = self.resolve(arg)
            return str(delimiter).join(str(item) for item in items)
        if name == "Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if name == "Split":
            delimiter, text = self.resolve(arg)
            return str(text).split(str(delimiter))
        if name == "FindInMap":
            mapping, top, second = self.resolve(arg)[:3]
            try:
                return self.resolve(self.raw["Mappings"][mapping][top][second])
            except (KeyError, TypeError) as exc:
                raise TemplateError(f"Fn::FindInMap {mapping}/{top}/{second} not found") from exc
        if name == "Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if name == "GetAZs":
            return [f"{LOCAL_REGION}{zone}" for zone in "abc"]
        if name == "Length":
            return len(self.resolve(arg))
        if name == "ToJsonString":
            return json.dumps(self.resolve(arg), separators=(",", ":"))
        raise TemplateError(f"Fn::{name} is not supported by the local stack")

    _SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self.resolve(arg[1])
        else:
            text, variables = arg, {}

        def substitute(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):  # ${!Literal} is how a template writes a literal ${Literal}
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(variables[expression])
            if "." in expression and not expression.startswith("AWS::"):
                resource, attribute = expression.split(".", 1)
                return str(self.get_att(resource, attribute))
            return str(self.ref(expression))

        return self._SUB_VARIABLE.sub(substitute, str(text))


# ----------------------------------------------------------------------------------------------------------- assembly


def _sam_merge(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals rule: maps merge (the resource wins), lists concatenate (globals first), scalars: resource wins."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _sam_merge(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return global_value + local_value
    return local_value


def _parameters(raw: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    declared: dict[str, Any] = raw.get("Parameters") or {}
    unknown = set(overrides) - set(declared)
    if unknown:
        raise TemplateError(f"parameter override for undeclared parameter(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in overrides:
            value: Any = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default; pass it as a parameter override")
        allowed = spec.get("AllowedValues")
        if allowed is not None and str(value) not in [str(item) for item in allowed]:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        kind = str(spec.get("Type", "String"))
        # CloudFormation hands every parameter to intrinsics as a string (lists for the List types).
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            values[name] = [item.strip() for item in str(value).split(",")] if isinstance(value, str) else value
        elif isinstance(value, bool):
            values[name] = str(value).lower()
        else:
            values[name] = str(value)
    return values


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _function_spec(resolver: _Resolver, logical_id: str, props: dict[str, Any], root: Path) -> FunctionSpec:
    code_uri = props.get("CodeUri")
    handler = props.get("Handler")
    if not isinstance(code_uri, str) or not isinstance(handler, str):
        raise TemplateError(f"{logical_id}: the local stack needs a local CodeUri folder and a Handler")
    variables = (props.get("Environment") or {}).get("Variables") or {}
    reserved = props.get("ReservedConcurrentExecutions")
    name = resolver.physical_name(logical_id)
    return FunctionSpec(
        logical_id=logical_id,
        name=name,
        arn=resolver.arn(logical_id),
        code_dir=(root / code_uri).resolve(),
        handler=handler,
        runtime=str(props.get("Runtime", "python3")),
        timeout=int(props.get("Timeout", 3)),  # the Lambda defaults
        memory_size=int(props.get("MemorySize", 128)),
        environment={str(key): _env_string(value) for key, value in variables.items()},
        reserved_concurrency=int(reserved) if reserved is not None else None,
        log_group=str((props.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{name}"),
    )


def _names(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(str(item) for item in values)


def _authorizer_spec(resolver: _Resolver, name: str, props: dict[str, Any]) -> AuthorizerSpec:
    function_arn = str(props.get("FunctionArn", ""))
    function = resolver.function_logical_id_for_arn(function_arn)
    identity = props.get("Identity") or {}
    payload_type = str(props.get("FunctionPayloadType", "TOKEN")).upper()
    return AuthorizerSpec(
        name=name,
        function=function,
        payload_type=payload_type,
        identity_headers=_names(identity.get("Headers")),
        identity_query_strings=_names(identity.get("QueryStrings")),
        identity_stage_variables=_names(identity.get("StageVariables")),
        identity_context=_names(identity.get("Context")),
        token_header=str(identity.get("Header", "Authorization")),
        validation_expression=identity.get("ValidationExpression"),
        reauthorize_every=int(identity.get("ReauthorizeEvery", DEFAULT_AUTHORIZER_TTL)),
    )


def _gateway_responses(raw: Any) -> dict[str, GatewayResponseSpec]:
    responses: dict[str, GatewayResponseSpec] = {}
    for response_type, spec in (raw or {}).items():
        headers: dict[str, str] = {}
        for header, value in ((spec.get("ResponseParameters") or {}).get("Headers") or {}).items():
            text = str(value)
            # SAM writes static header values as quoted literals ("'Bearer'"); request mappings are not emulated.
            if len(text) >= 2 and text[0] == text[-1] == "'":
                headers[str(header)] = text[1:-1]
        status = spec.get("StatusCode")
        responses[str(response_type)] = GatewayResponseSpec(
            status_code=int(status) if status is not None else None,
            headers=headers,
            templates={str(k): str(v) for k, v in (spec.get("ResponseTemplates") or {}).items()},
        )
    return responses


def load_template(
    path: Path,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
) -> TemplateModel:
    """Parse and resolve ``path`` for local use."""
    path = path.resolve()
    raw = load_yaml(path)
    resolver = _Resolver(raw, _parameters(raw, parameter_overrides or {}), stack_name)
    globals_section = raw.get("Globals") or {}
    root = path.parent

    functions: dict[str, FunctionSpec] = {}
    tables: dict[str, TableSpec] = {}
    api_props: dict[str, dict[str, Any]] = {}
    events: list[tuple[str, str, dict[str, Any]]] = []  # (function logical id, event name, resolved properties)
    queries: list[QueryDefinitionSpec] = []

    for logical_id, resource in resolver.resources.items():
        if not isinstance(resource, dict):
            raise TemplateError(f"resource {logical_id} is not a mapping")
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            merged = resolver.resolve(_sam_merge(globals_section.get("Function") or {}, props))
            functions[logical_id] = _function_spec(resolver, logical_id, merged, root)
            for event_name, event in (merged.get("Events") or {}).items():
                if event.get("Type") == "Api":
                    events.append((logical_id, event_name, event.get("Properties") or {}))
        elif kind == "AWS::Lambda::Function":
            functions[logical_id] = _function_spec(resolver, logical_id, resolver.resolve(props), root)
        elif kind in _TABLE_TYPES:
            tables[logical_id] = TableSpec(
                logical_id=logical_id, name=resolver.physical_name(logical_id), properties=resolver.resolve(props)
            )
        elif kind == "AWS::Serverless::Api":
            api_props[logical_id] = resolver.resolve(_sam_merge(globals_section.get("Api") or {}, props))
        elif kind == "AWS::Logs::QueryDefinition":
            resolved = resolver.resolve(props)
            queries.append(
                QueryDefinitionSpec(
                    logical_id=logical_id,
                    name=str(resolved["Name"]),
                    query_string=str(resolved["QueryString"]),
                    log_group_names=_names(resolved.get("LogGroupNames")),
                )
            )

    apis = _apis(resolver, api_props, events, globals_section)
    return TemplateModel(
        path=path,
        stack_name=stack_name,
        parameters=resolver.parameters,
        functions=functions,
        tables=tables,
        apis=apis,
        query_definitions=tuple(queries),
    )


def _apis(
    resolver: _Resolver,
    api_props: dict[str, dict[str, Any]],
    events: list[tuple[str, str, dict[str, Any]]],
    globals_section: dict[str, Any],
) -> dict[str, ApiSpec]:
    api_id_to_logical = {resolver.ref(logical_id): logical_id for logical_id in api_props}
    routes: dict[str, list[RouteSpec]] = {}
    for function, event_name, props in events:
        rest_api = props.get("RestApiId")
        if rest_api is None:
            logical_api = IMPLICIT_API_ID
            if logical_api not in api_props:  # SAM creates it with stage "Prod" and the Api Globals
                api_props[logical_api] = resolver.resolve(
                    _sam_merge(globals_section.get("Api") or {}, {"StageName": "Prod"})
                )
        elif rest_api in api_id_to_logical:
            logical_api = api_id_to_logical[rest_api]
        else:
            raise TemplateError(f"{function}.{event_name}: RestApiId {rest_api!r} is not an AWS::Serverless::Api")
        auth = api_props[logical_api].get("Auth") or {}
        chosen = (props.get("Auth") or {}).get("Authorizer", auth.get("DefaultAuthorizer"))
        routes.setdefault(logical_api, []).append(
            RouteSpec(
                event=event_name,
                method=str(props["Method"]).upper(),
                path=str(props["Path"]),
                function=function,
                authorizer=None if chosen in (None, "NONE", "AWS_IAM") else str(chosen),
                stream=props.get("ResponseTransferMode") == "RESPONSE_STREAM",
            )
        )

    apis: dict[str, ApiSpec] = {}
    for logical_id, props in api_props.items():
        auth = props.get("Auth") or {}
        authorizers = {
            name: _authorizer_spec(resolver, name, spec)
            for name, spec in (auth.get("Authorizers") or {}).items()
            if "FunctionArn" in spec  # Cognito authorizers are not emulated
        }
        for route in routes.get(logical_id, []):
            if route.authorizer is not None and route.authorizer not in authorizers:
                raise TemplateError(f"route {route.method} {route.path} names unknown authorizer {route.authorizer}")
        apis[logical_id] = ApiSpec(
            logical_id=logical_id,
            api_id=str(resolver.ref(logical_id)) if logical_id in resolver.resources else _short_id(logical_id),
            stage_name=str(props.get("StageName", "Prod")),
            authorizers=authorizers,
            routes=tuple(routes.get(logical_id, [])),
            gateway_responses=_gateway_responses(props.get("GatewayResponses")),
        )
    return apis
