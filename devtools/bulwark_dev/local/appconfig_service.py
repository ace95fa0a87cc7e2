"""The local stack's AWS AppConfig: the control plane `bulwark policy push` uses and AppConfigData the functions poll.

The application, environment, configuration profile (with its JSON Schema validators) and deployment strategy are the
template's own (template.yaml, resolved for the local stack), so the names the CLI looks up and the ARNs the roles
allow are the deployed ones. Served, in AWS's REST-JSON shapes:

* ListApplications, ListEnvironments, ListConfigurationProfiles, ListDeploymentStrategies;
* CreateHostedConfigurationVersion, StartDeployment (the profile's validators run here, as AWS runs them: a document
  that fails is refused with BadRequestException, reason InvalidConfiguration), GetDeployment;
* StartConfigurationSession and GetLatestConfiguration (a token is good for one call; an unchanged configuration is an
  empty body).

``route`` tells the endpoint (local/aws_endpoint.py) which IAM action and resources a call needs before anything runs.
Hosted versions and deployments live in memory: a restart of `bulwark local` starts from the template's state.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_dev.local._http import Response
from bulwark_dev.local.iam_policy import Statement
from bulwark_dev.local.iam_roles import FunctionIdentity
from bulwark_dev.local.template_model import (
    DEFAULT_STACK_NAME,
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    _parameters,
    _Resolver,
    load_yaml,
)

ARN_PREFIX = f"arn:aws:appconfig:{LOCAL_REGION}:{LOCAL_ACCOUNT}"
OPERATOR = "BulwarkLocalOperator"
# What the person running `bulwark local` may do, as an IAM role would say it: push and deploy policies (the actions
# `bulwark policy push` makes), nothing of the functions' data plane, nothing else.
OPERATOR_ACTIONS = (
    "appconfig:ListApplications",
    "appconfig:ListEnvironments",
    "appconfig:ListConfigurationProfiles",
    "appconfig:ListDeploymentStrategies",
    "appconfig:CreateHostedConfigurationVersion",
    "appconfig:StartDeployment",
    "appconfig:GetDeployment",
)
_MAX_CONTENT = 2 * 1024 * 1024  # AppConfig's limit on a hosted configuration version


def operator_identity() -> FunctionIdentity:
    """The local operator's identity: the credentials `bulwark local` writes for the CLI sign as this role."""
    statement = Statement.parse(
        {"Sid": "PushPolicies", "Effect": "Allow", "Action": list(OPERATOR_ACTIONS), "Resource": f"{ARN_PREFIX}:*"},
        source=f"{OPERATOR}/bulwark-local-operator",
    )
    return FunctionIdentity(
        logical_id=OPERATOR,
        name="bulwark-cli",
        role_name=OPERATOR,
        role_arn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{OPERATOR}",
        statements=(statement,),
        log_group_arn="",
        env_kms_key_arn=None,
        tracing=False,
        dead_letter_arn=None,
    )


class AppConfigError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    """REST-JSON's error shape: the code in x-amzn-ErrorType, the message (and any details) in the body."""
    body = json.dumps({"Message": message, **extra}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("x-amzn-ErrorType", code),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return Response(status, headers, body)


def _ok(status: int, body: Mapping[str, Any] | bytes, headers: Mapping[str, str] | None = None) -> Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    kept: list[tuple[str, str]] = [("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))]
    if headers:
        kept = [(k, v) for k, v in kept if k.lower() not in {h.lower() for h in headers}] + list(headers.items())
    return Response(status, kept, data)


@dataclass(frozen=True, slots=True)
class Named:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Strategy:
    id: str
    name: str
    duration_minutes: int
    bake_minutes: int
    growth_factor: float


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    name: str
    validators: tuple[tuple[str, str], ...]  # (Type, Content)


@dataclass(frozen=True, slots=True)
class AppConfigResources:
    """The template's AppConfig resources, resolved as the local stack names them."""

    application: Named
    environments: tuple[Named, ...]
    profiles: tuple[Profile, ...]
    strategies: tuple[Strategy, ...]

    @classmethod
    def from_template(
        cls, path: Path, *, parameter_overrides: Mapping[str, str] | None = None, stack_name: str = DEFAULT_STACK_NAME
    ) -> list[AppConfigResources]:
        raw = load_yaml(path)
        resolver = _Resolver(raw, _parameters(raw, parameter_overrides or {}), stack_name)
        by_type: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for logical_id, resource in resolver.resources.items():
            if isinstance(resource, dict) and str(resource.get("Type", "")).startswith("AWS::AppConfig::"):
                props = resolver.resolve(resource.get("Properties") or {})
                by_type.setdefault(resource["Type"], []).append((logical_id, props))
        strategies = tuple(
            Strategy(
                resolver.ref(logical_id),
                str(props["Name"]),
                int(props.get("DeploymentDurationInMinutes", 0)),
                int(props.get("FinalBakeTimeInMinutes", 0)),
                float(props.get("GrowthFactor", 100)),
            )
            for logical_id, props in by_type.get("AWS::AppConfig::DeploymentStrategy", [])
        )
        out = []
        for logical_id, props in by_type.get("AWS::AppConfig::Application", []):
            app_id = resolver.ref(logical_id)

            def mine(kind: str, app_id: str = app_id) -> list[tuple[str, dict[str, Any]]]:
                return [
                    (lid, p)
                    for lid, p in by_type.get(f"AWS::AppConfig::{kind}", [])
                    if p.get("ApplicationId") == app_id
                ]

            environments = tuple(Named(resolver.ref(lid), str(p["Name"])) for lid, p in mine("Environment"))
            profiles = tuple(
                Profile(
                    resolver.ref(lid),
                    str(p["Name"]),
                    tuple((str(v["Type"]), str(v["Content"])) for v in p.get("Validators") or []),
                )
                for lid, p in mine("ConfigurationProfile")
            )
            out.append(cls(Named(app_id, str(props["Name"])), environments, profiles, strategies))
        return out


@dataclass
class _Deployment:
    number: int
    environment: str
    profile: str
    version: int
    strategy: Strategy
    started: dt.datetime
    description: str = ""

    def state(self, now: dt.datetime) -> str:
        elapsed = (now - self.started).total_seconds() / 60
        if elapsed >= self.strategy.duration_minutes + self.strategy.bake_minutes:
            return "COMPLETE"
        return "DEPLOYING" if elapsed < self.strategy.duration_minutes else "BAKING"

    def view(self, app: str, now: dt.datetime) -> dict[str, Any]:
        state = self.state(now)
        view: dict[str, Any] = {
            "ApplicationId": app,
            "EnvironmentId": self.environment,
            "ConfigurationProfileId": self.profile,
            "DeploymentStrategyId": self.strategy.id,
            "DeploymentNumber": self.number,
            "ConfigurationVersion": str(self.version),
            "DeploymentDurationInMinutes": self.strategy.duration_minutes,
            "FinalBakeTimeInMinutes": self.strategy.bake_minutes,
            "GrowthFactor": self.strategy.growth_factor,
            "State": state,
            "PercentageComplete": 100.0 if state != "DEPLOYING" else 0.0,
            "StartedAt": self.started.isoformat(),
            "Description": self.description,
        }
        if state == "COMPLETE":
            view["CompletedAt"] = self.started.isoformat()
        return view


@dataclass
class _Session:
    application: str
    environment: str
    profile: str
    served: int | None = None  # the hosted version last handed to this session


@dataclass
class _AppState:
    versions: dict[str, list[tuple[bytes, str, str]]] = field(default_factory=dict)  # profile -> (content, type, label)
    deployments: dict[str, list[_Deployment]] = field(default_factory=dict)  # environment -> deployments


@dataclass(frozen=True, slots=True)
class Route:
    """What a call is: the IAM action and the resources AWS authorizes it on, and how to answer it."""

    action: str
    resources: tuple[str, ...]
    answer: Callable[[], Response]


class AppConfigStandIn:
    """AppConfig and AppConfigData for the template's applications (see the module's docstring)."""

    def __init__(self, applications: list[AppConfigResources]) -> None:
        self._apps = {a.application.id: a for a in applications}
        self._state = {a.application.id: _AppState() for a in applications}
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------------------------------- lookups
    def _app(self, identifier: str) -> AppConfigResources:
        for app in self._apps.values():
            if identifier in (app.application.id, app.application.name):
                return app
        raise AppConfigError(
            404, "ResourceNotFoundException", f"Application {identifier} not found", ResourceType="Application"
        )

    @staticmethod
    def _one(items: tuple[Any, ...], identifier: str, kind: str) -> Any:
        for item in items:
            if identifier in (item.id, item.name):
                return item
        raise AppConfigError(404, "ResourceNotFoundException", f"{kind} {identifier} not found", ResourceType=kind)

    # ------------------------------------------------------------------------------------------------------ route
    def route(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Route:
        """The call's IAM check and answer; AppConfigError for a call that names nothing this stand-in serves."""
        path, _, query = raw_path.partition("?")
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        params = dict(urllib.parse.parse_qsl(query))
        if method == "POST" and parts == ["configurationsessions"]:
            return self._start_session_route(body)
        if method == "GET" and parts == ["configuration"]:
            return self._latest_route(params.get("configuration_token", ""))
        if method == "GET" and parts == ["applications"]:
            items: list[dict[str, Any]] = [
                {"Id": a.application.id, "Name": a.application.name} for a in self._apps.values()
            ]
            return Route(
                "appconfig:ListApplications", (f"{ARN_PREFIX}:application/*",), lambda: _ok(200, {"Items": items})
            )
        if method == "GET" and parts == ["deploymentstrategies"]:
            strategies = {s.id: s for a in self._apps.values() for s in a.strategies}
            items = [
                {
                    "Id": s.id,
                    "Name": s.name,
                    "DeploymentDurationInMinutes": s.duration_minutes,
                    "FinalBakeTimeInMinutes": s.bake_minutes,
                    "GrowthFactor": s.growth_factor,
                    "ReplicateTo": "NONE",
                }
                for s in strategies.values()
            ]
            return Route(
                "appconfig:ListDeploymentStrategies",
                (f"{ARN_PREFIX}:deploymentstrategy/*",),
                lambda: _ok(200, {"Items": items}),
            )
        if len(parts) >= 3 and parts[0] == "applications":
            return self._application_route(method, parts, headers, body)
        raise AppConfigError(404, "UnknownOperationException", f"{method} {path} is not served by the local stack")

    def _application_route(self, method: str, parts: list[str], headers: Mapping[str, str], body: bytes) -> Route:
        app = self._app(parts[1])
        app_arn = f"{ARN_PREFIX}:application/{app.application.id}"
        if method == "GET" and parts[2:] == ["environments"]:
            items: list[dict[str, Any]] = [
                {"ApplicationId": app.application.id, "Id": e.id, "Name": e.name, "State": "ReadyForDeployment"}
                for e in app.environments
            ]
            return Route("appconfig:ListEnvironments", (app_arn,), lambda: _ok(200, {"Items": items}))
        if method == "GET" and parts[2:] == ["configurationprofiles"]:
            items = [
                {
                    "ApplicationId": app.application.id,
                    "Id": p.id,
                    "Name": p.name,
                    "LocationUri": "hosted",
                    "Type": "AWS::AppConfig::FreeForm",
                    "ValidatorTypes": [t for t, _ in p.validators],
                }
                for p in app.profiles
            ]
            return Route("appconfig:ListConfigurationProfiles", (app_arn,), lambda: _ok(200, {"Items": items}))
        if (
            method == "POST"
            and len(parts) == 5
            and parts[2] == "configurationprofiles"
            and parts[4] == "hostedconfigurationversions"
        ):
            profile = self._one(app.profiles, parts[3], "ConfigurationProfile")
            arn = f"{app_arn}/configurationprofile/{profile.id}"
            return Route(
                "appconfig:CreateHostedConfigurationVersion",
                (arn,),
                lambda: self._create_version(app, profile, headers, body),
            )
        if len(parts) >= 5 and parts[2] == "environments" and parts[4] == "deployments":
            environment = self._one(app.environments, parts[3], "Environment")
            env_arn = f"{app_arn}/environment/{environment.id}"
            if method == "POST" and len(parts) == 5:
                return self._start_deployment_route(app, environment, env_arn, body)
            if method == "GET" and len(parts) == 6 and parts[5].isdigit():
                number = int(parts[5])
                return Route(
                    "appconfig:GetDeployment",
                    (f"{env_arn}/deployment/{number}",),
                    lambda: self._get_deployment(app, environment, number),
                )
        raise AppConfigError(
            404, "UnknownOperationException", f"{method} /{'/'.join(parts)} is not served by the local stack"
        )

    # ------------------------------------------------------------------------------------------------ control plane
    def _create_version(
        self, app: AppConfigResources, profile: Profile, headers: Mapping[str, str], body: bytes
    ) -> Response:
        lowered = {k.lower(): v for k, v in headers.items()}
        if not body or len(body) > _MAX_CONTENT:
            raise AppConfigError(400, "BadRequestException", "Content must be 1 byte to 2 MB")
        content_type = lowered.get("content-type", "application/octet-stream")
        with self._lock:
            versions = self._state[app.application.id].versions.setdefault(profile.id, [])
            versions.append((body, content_type, lowered.get("versionlabel", "")))
            number = len(versions)
        answer = {
            "Application-Id": app.application.id,
            "Configuration-Profile-Id": profile.id,
            "Version-Number": str(number),
            "Content-Type": content_type,
        }
        return _ok(201, body, answer)

    def _start_deployment_route(self, app: AppConfigResources, environment: Named, env_arn: str, body: bytes) -> Route:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise AppConfigError(400, "BadRequestException", "body is not JSON") from None
        profile = self._one(app.profiles, str(params.get("ConfigurationProfileId", "")), "ConfigurationProfile")
        strategy = self._one(app.strategies, str(params.get("DeploymentStrategyId", "")), "DeploymentStrategy")
        resources = (
            env_arn,
            f"{ARN_PREFIX}:application/{app.application.id}/configurationprofile/{profile.id}",
            f"{ARN_PREFIX}:deploymentstrategy/{strategy.id}",
        )
        return Route(
            "appconfig:StartDeployment",
            resources,
            lambda: self._start_deployment(app, environment, profile, strategy, params),
        )

    def _start_deployment(
        self,
        app: AppConfigResources,
        environment: Named,
        profile: Profile,
        strategy: Strategy,
        params: Mapping[str, Any],
    ) -> Response:
        state = self._state[app.application.id]
        version = str(params.get("ConfigurationVersion", ""))
        versions = state.versions.get(profile.id, [])
        if not version.isdigit() or not 1 <= int(version) <= len(versions):
            raise AppConfigError(
                404,
                "ResourceNotFoundException",
                f"Configuration version {version} not found",
                ResourceType="Configuration",
            )
        content = versions[int(version) - 1][0]
        problems = _validate(profile, content)
        if problems:
            raise AppConfigError(
                400,
                "BadRequestException",
                "Configuration failed validation",
                Reason="InvalidConfiguration",
                Details={"InvalidConfiguration": problems},
            )
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            deployments = state.deployments.setdefault(environment.id, [])
            if any(d.state(now) != "COMPLETE" for d in deployments):
                raise AppConfigError(
                    409, "ConflictException", "A deployment is already in progress in this environment"
                )
            deployment = _Deployment(
                len(deployments) + 1,
                environment.id,
                profile.id,
                int(version),
                strategy,
                now,
                str(params.get("Description", "")),
            )
            deployments.append(deployment)
        return _ok(201, deployment.view(app.application.id, now))

    def _get_deployment(self, app: AppConfigResources, environment: Named, number: int) -> Response:
        deployments = self._state[app.application.id].deployments.get(environment.id, [])
        if not 1 <= number <= len(deployments):
            raise AppConfigError(
                404, "ResourceNotFoundException", f"Deployment {number} not found", ResourceType="Deployment"
            )
        return _ok(200, deployments[number - 1].view(app.application.id, dt.datetime.now(dt.UTC)))

    # -------------------------------------------------------------------------------------------------- data plane
    def _configuration_arn(self, session: _Session) -> str:
        environment = f"{ARN_PREFIX}:application/{session.application}/environment/{session.environment}"
        return f"{environment}/configuration/{session.profile}"

    def _start_session_route(self, body: bytes) -> Route:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise AppConfigError(400, "BadRequestException", "body is not JSON") from None
        app = self._app(str(params.get("ApplicationIdentifier", "")))
        environment = self._one(app.environments, str(params.get("EnvironmentIdentifier", "")), "Environment")
        profile = self._one(app.profiles, str(params.get("ConfigurationProfileIdentifier", "")), "ConfigurationProfile")
        session = _Session(app.application.id, environment.id, profile.id)

        def answer() -> Response:
            token = secrets.token_urlsafe(24)
            with self._lock:
                self._sessions[token] = session
            return _ok(201, {"InitialConfigurationToken": token})

        return Route("appconfig:StartConfigurationSession", (self._configuration_arn(session),), answer)

    def _latest_route(self, token: str) -> Route:
        with self._lock:
            session = self._sessions.get(token)
        if session is None:
            raise AppConfigError(
                400, "BadRequestException", "Invalid or expired configuration token", Reason="InvalidParameters"
            )
        return Route(
            "appconfig:GetLatestConfiguration",
            (self._configuration_arn(session),),
            lambda: self._latest(token, session),
        )

    def _latest(self, token: str, session: _Session) -> Response:
        with self._lock:
            if self._sessions.pop(token, None) is None:  # a token is good for one call
                raise AppConfigError(
                    400, "BadRequestException", "Invalid or expired configuration token", Reason="InvalidParameters"
                )
            state = self._state[session.application]
            deployed = [d for d in state.deployments.get(session.environment, []) if d.profile == session.profile]
            content, content_type, label, version = b"", "application/octet-stream", "", None
            if deployed:
                version = deployed[-1].version
                if version != session.served:
                    content, content_type, label = state.versions[session.profile][version - 1]
            following = secrets.token_urlsafe(24)
            self._sessions[following] = _Session(session.application, session.environment, session.profile, version)
        headers = {
            "Next-Poll-Configuration-Token": following,
            "Next-Poll-Interval-In-Seconds": "15",
            "Content-Type": content_type,
        }
        if label:
            headers["Version-Label"] = label
        return _ok(200, content, headers)


def _validate(profile: Profile, content: bytes) -> list[dict[str, str]]:
    """The profile's JSON_SCHEMA validators, as AppConfig runs them (draft 04); the problems, empty when it passes."""
    import fastjsonschema

    for kind, schema_text in profile.validators:
        if kind != "JSON_SCHEMA":
            continue  # a Lambda validator would need the function: none in this template
        try:
            document = json.loads(content)
        except ValueError:
            return [{"Type": "Syntax", "Constraint": "JSON", "Location": "", "Reason": "the content is not JSON"}]
        try:
            fastjsonschema.compile(json.loads(schema_text))(document)
        except fastjsonschema.JsonSchemaValueException as exc:
            where = str(exc.name).removeprefix("data").lstrip(".")
            reason = re.sub(r"\s+", " ", str(exc.message))[:200]
            return [{"Type": "Schema", "Constraint": str(exc.rule), "Location": where, "Reason": reason}]
    return []
