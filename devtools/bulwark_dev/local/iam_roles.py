"""Each function's IAM role as ``template.yaml`` writes it, resolved for the local account and region.

Read from the template on every change of the file (``RoleBook.current()`` compares the modification time), so an
operator who edits a role sees the effect in ``bulwark local`` at the next call, without restarting anything.

A function's identity policies are the inline ``Policies`` of the ``AWS::IAM::Role`` its ``Role`` names, plus the
``AWS::IAM::Policy`` / ``AWS::IAM::RolePolicy`` resources attached to that role. A SAM function without ``Role`` gets
the role SAM would generate: its ``Policies`` with SAM policy templates (``DynamoDBCrudPolicy`` ...) expanded by the
SAM translator's own processor, and the basic execution policy SAM always adds.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_dev.local.iam_policy import Policy, Statement
from bulwark_dev.local.template_model import (
    DEFAULT_STACK_NAME,
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    TemplateError,
    _parameters,
    _Resolver,
    _sam_merge,
    load_yaml,
)

_FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
# What SAM attaches to a role it generates (AWSLambdaBasicExecutionRole), written out: no IAM call to fetch it.
_BASIC_EXECUTION = {
    "Effect": "Allow",
    "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
    "Resource": "*",
}


@dataclass(frozen=True, slots=True)
class FunctionIdentity:
    """What IAM knows about one function: its role and policies, and what the Lambda platform does as that role."""

    logical_id: str
    name: str
    role_name: str
    role_arn: str
    statements: tuple[Statement, ...]
    log_group_arn: str  # the group the platform writes the function's logs to
    env_kms_key_arn: str | None  # KmsKeyArn: the platform decrypts the environment with it at init
    tracing: bool  # Tracing: Active: the platform sends trace segments
    dead_letter_arn: str | None  # an SQS DLQ: Lambda checks sqs:SendMessage when the function is deployed
    dead_letter_key_arn: str | None = None  # the DLQ's customer-managed key, if it is encrypted with one

    @property
    def principal_arn(self) -> str:
        """The caller as AWS names it in an AccessDenied message (the role session of the function)."""
        return f"arn:aws:sts::{LOCAL_ACCOUNT}:assumed-role/{self.role_name}/{self.name}"


@dataclass(frozen=True, slots=True)
class TableKeys:
    name: str
    arn: str
    hash_key: str
    range_key: str | None
    sse_key_arn: str | None  # a customer-managed key: DynamoDB calls KMS on the caller's behalf


@dataclass(frozen=True, slots=True)
class KmsKey:
    logical_id: str
    arn: str
    key_id: str
    key_spec: str
    key_usage: str
    policy: Policy
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretSpec:
    logical_id: str
    arn: str
    name: str
    kms_key_arn: str | None  # a customer-managed key: Secrets Manager decrypts with it on the caller's behalf


@dataclass(frozen=True, slots=True)
class RoleModel:
    functions: dict[str, FunctionIdentity]
    tables: dict[str, TableKeys]  # by table name
    keys: dict[str, KmsKey]  # by key ARN
    function_arns: dict[str, str] = field(default_factory=dict)  # name -> ARN
    secrets: dict[str, SecretSpec] = field(default_factory=dict)  # by ARN

    def secret(self, secret_id: str) -> SecretSpec | None:
        """A secret by ARN or name, as Secrets Manager accepts ``SecretId``."""
        for secret in self.secrets.values():
            if secret_id in (secret.arn, secret.name):
                return secret
        return None

    def function(self, logical_id: str) -> FunctionIdentity:
        return self.functions[logical_id]

    def all_allow_statements(self) -> list[tuple[str, Statement]]:
        """(function logical id, statement) for every Allow of every function role: what the proof test drops."""
        return [
            (logical_id, statement)
            for logical_id, identity in self.functions.items()
            for statement in identity.statements
            if statement.effect == "Allow"
        ]

    def key(self, key_id: str) -> KmsKey | None:
        """A key by ARN, key id, alias name or alias ARN, as KMS accepts ``KeyId``."""
        for key in self.keys.values():
            if key_id in (key.arn, key.key_id) or key_id in key.aliases:
                return key
            if any(key_id == f"arn:aws:kms:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{alias}" for alias in key.aliases):
                return key
        return None


def _statements(resolver: _Resolver, document: Any, source: str) -> list[Statement]:
    resolved = resolver.resolve(document)
    if not isinstance(resolved, Mapping):
        raise TemplateError(f"{source}: PolicyDocument is not a mapping")
    return list(Policy.parse(resolved, source=source).statements)


def _sam_policies(resolver: _Resolver, logical_id: str, policies: Any) -> list[Statement]:
    from samtranslator.policy_template_processor.processor import (  # type: ignore[import-untyped]
        PolicyTemplatesProcessor,
    )

    processor = PolicyTemplatesProcessor(PolicyTemplatesProcessor.get_default_policy_templates_json())
    out = [Statement.parse(_BASIC_EXECUTION, source=f"{logical_id}Role/AWSLambdaBasicExecutionRole")]
    items = policies if isinstance(policies, list) else [policies]
    for index, item in enumerate(items):
        source = f"{logical_id}Role/{logical_id}RolePolicy{index}"
        if isinstance(item, Mapping) and "Statement" in item:
            out += _statements(resolver, item, source)
        elif isinstance(item, Mapping) and len(item) == 1 and processor.has(next(iter(item))):
            ((template_name, parameters),) = item.items()
            source = f"{logical_id}Role/{template_name}"
            out += _statements(resolver, processor.convert(template_name, parameters or {}), source)
        else:
            # A managed policy ARN or name: its document lives in IAM, which the local stack cannot read.
            raise TemplateError(f"{logical_id}: Policies item {item!r} cannot be evaluated locally")
    return out


def load_roles(
    path: Path, *, parameter_overrides: Mapping[str, str] | None = None, stack_name: str = DEFAULT_STACK_NAME
) -> RoleModel:
    return roles_of(load_yaml(path), parameter_overrides=parameter_overrides, stack_name=stack_name)


def roles_of(
    raw: dict[str, Any], *, parameter_overrides: Mapping[str, str] | None = None, stack_name: str = DEFAULT_STACK_NAME
) -> RoleModel:
    """The roles of a parsed template (load_yaml / parse_template_text)."""
    reader = _Reader(raw, _Resolver(raw, _parameters(raw, parameter_overrides or {}), stack_name), stack_name)
    roles = reader.role_statements()
    functions, function_arns = reader.functions(roles)
    tables, secrets, aliases = reader.tables_and_secrets()
    return RoleModel(
        functions=functions, tables=tables, keys=reader.keys(aliases), function_arns=function_arns, secrets=secrets
    )


class _Reader:
    """One pass over a template's resources, one kind at a time."""

    def __init__(self, raw: dict[str, Any], resolver: _Resolver, stack_name: str) -> None:
        self.resolver = resolver
        self.stack_name = stack_name
        self.globals_function = (raw.get("Globals") or {}).get("Function") or {}

    def present(self, kinds: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        """The resources of these types that the template's conditions keep."""
        out = []
        for logical_id, resource in self.resolver.resources.items():
            if not isinstance(resource, dict) or resource.get("Type") not in kinds:
                continue
            if "Condition" in resource and not self.resolver.condition(resource["Condition"]):
                continue
            out.append((logical_id, resource))
        return out

    def role_statements(self) -> dict[str, list[Statement]]:
        """Identity policies of each role: inline ones, then attached AWS::IAM::Policy / RolePolicy resources."""
        resolver = self.resolver
        roles: dict[str, list[Statement]] = {}
        for logical_id, resource in self.present(("AWS::IAM::Role",)):
            statements: list[Statement] = []
            for policy in (resource.get("Properties") or {}).get("Policies") or []:
                name = resolver.resolve(policy.get("PolicyName"))
                statements += _statements(resolver, policy.get("PolicyDocument"), f"{logical_id}/{name}")
            roles[logical_id] = statements
        for logical_id, resource in self.present(("AWS::IAM::Policy", "AWS::IAM::RolePolicy")):
            props = resource.get("Properties") or {}
            for role in props.get("Roles") or ([props["RoleName"]] if "RoleName" in props else []):
                role_id = role.get("Ref") if isinstance(role, Mapping) else None
                if role_id in roles:
                    roles[role_id] += _statements(resolver, props.get("PolicyDocument"), logical_id)
        return roles

    def functions(self, roles: dict[str, list[Statement]]) -> tuple[dict[str, FunctionIdentity], dict[str, str]]:
        functions: dict[str, FunctionIdentity] = {}
        arns: dict[str, str] = {}
        for logical_id, resource in self.present(_FUNCTION_TYPES):
            props = resource.get("Properties") or {}
            if resource["Type"] == "AWS::Serverless::Function":
                props = _sam_merge(self.globals_function, props)
            functions[logical_id] = self._identity(logical_id, props, roles)
            arns[functions[logical_id].name] = self.resolver.arn(logical_id)
        return functions, arns

    def _identity(self, logical_id: str, props: dict[str, Any], roles: dict[str, list[Statement]]) -> FunctionIdentity:
        resolver = self.resolver
        name = resolver.physical_name(logical_id)
        if props.get("Role") is not None:
            role_id = _referenced(props["Role"])
            if role_id not in roles:
                raise TemplateError(f"{logical_id}: Role must name an AWS::IAM::Role of this template")
            role_name, statements = resolver.physical_name(role_id), roles[role_id]
        else:
            role_name = f"{self.stack_name}-{logical_id}Role"
            statements = _sam_policies(resolver, logical_id, props.get("Policies") or [])
        group = resolver.resolve(props.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{name}"
        dlq = resolver.resolve(props.get("DeadLetterQueue") or {})
        dlq_arn = str(dlq["TargetArn"]) if dlq.get("Type") == "SQS" and "TargetArn" in dlq else None
        kms = props.get("KmsKeyArn")
        return FunctionIdentity(
            logical_id=logical_id,
            name=name,
            role_name=role_name,
            role_arn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{role_name}",
            statements=tuple(statements),
            log_group_arn=f"arn:aws:logs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:log-group:{group}:*",
            env_kms_key_arn=str(resolver.resolve(kms)) if kms is not None else None,
            tracing=resolver.resolve(props.get("Tracing")) == "Active",
            dead_letter_arn=dlq_arn,
            dead_letter_key_arn=self._queue_key(dlq_arn),
        )

    def _queue_key(self, queue_arn: str | None) -> str | None:
        for queue_id, queue in self.present(("AWS::SQS::Queue",)):
            if self.resolver.arn(queue_id) == queue_arn:
                master = (queue.get("Properties") or {}).get("KmsMasterKeyId")
                return _key_arn(str(self.resolver.resolve(master)), self.resolver) if master else None
        return None

    def tables_and_secrets(self) -> tuple[dict[str, TableKeys], dict[str, SecretSpec], dict[str, list[str]]]:
        resolver = self.resolver
        tables: dict[str, TableKeys] = {}
        for logical_id, resource in self.present(("AWS::DynamoDB::Table",)):
            props = resolver.resolve(resource.get("Properties") or {})
            schema = {k["KeyType"]: k["AttributeName"] for k in props.get("KeySchema") or []}
            sse = props.get("SSESpecification") or {}
            name = resolver.physical_name(logical_id)
            tables[name] = TableKeys(
                name=name,
                arn=resolver.arn(logical_id),
                hash_key=schema["HASH"],
                range_key=schema.get("RANGE"),
                sse_key_arn=str(sse["KMSMasterKeyId"]) if sse.get("SSEEnabled") and sse.get("KMSMasterKeyId") else None,
            )
        secrets: dict[str, SecretSpec] = {}
        for logical_id, resource in self.present(("AWS::SecretsManager::Secret",)):
            props = resolver.resolve(resource.get("Properties") or {})
            arn, key = resolver.arn(logical_id), props.get("KmsKeyId")
            secrets[arn] = SecretSpec(
                logical_id=logical_id,
                arn=arn,
                name=str(props.get("Name") or resolver.physical_name(logical_id)),
                kms_key_arn=_key_arn(str(key), resolver) if key else None,
            )
        aliases: dict[str, list[str]] = {}
        for _, resource in self.present(("AWS::KMS::Alias",)):
            props = resolver.resolve(resource.get("Properties") or {})
            aliases.setdefault(str(props.get("TargetKeyId")), []).append(str(props.get("AliasName")))
        return tables, secrets, aliases

    def keys(self, aliases: dict[str, list[str]]) -> dict[str, KmsKey]:
        resolver = self.resolver
        keys: dict[str, KmsKey] = {}
        for logical_id, resource in self.present(("AWS::KMS::Key",)):
            props = resource.get("Properties") or {}
            arn = resolver.arn(logical_id)
            key_id = arn.rsplit("/", 1)[1]
            keys[arn] = KmsKey(
                logical_id=logical_id,
                arn=arn,
                key_id=key_id,
                key_spec=str(resolver.resolve(props.get("KeySpec", "SYMMETRIC_DEFAULT"))),
                key_usage=str(resolver.resolve(props.get("KeyUsage", "ENCRYPT_DECRYPT"))),
                policy=Policy.parse(resolver.resolve(props.get("KeyPolicy") or {}), source=f"{logical_id}/KeyPolicy"),
                aliases=tuple(aliases.get(key_id, []) + aliases.get(arn, [])),
            )
        return keys


def _key_arn(key: str, resolver: _Resolver) -> str:
    # KmsKeyId may be a key id (a key's Ref) or an ARN.
    if key.startswith("arn:"):
        return key
    return f"arn:aws:kms:{LOCAL_REGION}:{LOCAL_ACCOUNT}:key/{key}"


def _referenced(value: Any) -> str:
    """The logical id in ``!GetAtt X.Arn`` or ``!Ref X``."""
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Fn::GetAtt":
            return str(arg.split(".", 1)[0] if isinstance(arg, str) else arg[0])
        if key == "Ref":
            return str(arg)
    raise TemplateError(f"Role {value!r}: the local stack needs !GetAtt Role.Arn or !Ref Role")


class RoleBook:
    """The roles of a template file, re-read whenever the file changes (checked at most every ``interval`` s)."""

    def __init__(
        self, path: Path, *, parameter_overrides: Mapping[str, str] | None = None, interval: float = 0.0
    ) -> None:
        self.path = path
        self._overrides = dict(parameter_overrides or {})
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._model: RoleModel | None = None
        self.reloads = 0

    def variant(self, raw: dict[str, Any]) -> RoleModel:
        """The roles of ``raw``, an edited copy of this template (parsed), read as this book reads its file."""
        return roles_of(raw, parameter_overrides=self._overrides)

    def current(self) -> RoleModel:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._model is None or stamp != self._stamp:
                # A template that no longer parses raises here on every call (the endpoint then refuses everything):
                # the last good roles are never kept, so a broken edit cannot leave old permissions in force.
                self._model = None
                self._model = load_roles(self.path, parameter_overrides=self._overrides)
                self._stamp = stamp
                self.reloads += 1
            return self._model
