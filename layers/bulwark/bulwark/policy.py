"""The policy file: the one place an operator decides how Bulwark behaves.

Validated at load with pydantic (unknown keys refused, so a typo is an error, not a silent default). Errors name the
line of the YAML file they come from (`bulwark policy check`). `policy_json_schema()` publishes the JSON Schema.

No `from __future__ import annotations` here, nor in the other modules that define pydantic models: with it, every
field's annotation is a string pydantic must compile and evaluate when the class is built (~10 ms of the validator's
cold start across its models).
"""

import ipaddress
import os
import time
import urllib.parse
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bulwark.limits.spend import DEFAULT_PRICES_USD_PER_MILLION, FREE, Price, usd_to_micros
from bulwark.policy_twin import read_twin
from bulwark.settings import Settings

GuardMode = Literal["off", "flag", "block"]
PiiMode = Literal["off", "flag", "redact", "block"]
OutputPiiMode = Literal["off", "flag", "redact"]
Route = Literal["chat", "models", "invoke"]
ALL_ROUTES: tuple[Route, ...] = ("chat", "models", "invoke")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _local_mode(info: ValidationInfo) -> bool:
    # `bulwark local` sets BULWARK_LOCAL=1 in every function's environment; a caller may say so explicitly instead.
    context = info.context
    if isinstance(context, dict) and "local" in context:
        return bool(context["local"])
    return Settings.from_env().local  # not the cached settings(): the policy is validated once per change anyway


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(url: str, what: str, *, local: bool) -> str:
    """https with a host name; plain http only to a loopback address and only under `bulwark local`. The host is
    parsed, never prefix-matched (http://127.0.0.1.evil.example is not loopback)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        if local:
            return url
        raise ValueError(f"{what} uses plain http, which only `bulwark local` accepts (loopback); deployed: use https")
    raise ValueError(f"{what} must be an https URL (plain http only to a loopback address under `bulwark local`)")


class UpstreamConfig(_Strict):
    """Where a model lives. `kind` picks the adapter in bulwark.upstreams."""

    kind: Literal["demo", "openai", "http", "bedrock", "sagemaker"]
    url: str | None = Field(default=None, description="Base URL (openai: up to /v1; http: the full endpoint URL).")
    model_id: str | None = Field(default=None, description="Upstream's own model name (openai, bedrock).")
    endpoint_name: str | None = Field(default=None, description="SageMaker endpoint name.")
    api_key_secret: str | None = Field(default=None, description="Secrets Manager id of the upstream API key.")
    api_key_env: str | None = Field(default=None, description="Local only: environment variable with the API key.")
    region: str | None = None
    endpoint_url: str | None = Field(default=None, description="Override of the AWS service endpoint (tests, VPC).")
    timeout_seconds: float = Field(default=25.0, gt=0, le=28)
    max_retries: int = Field(default=2, ge=0, le=5)
    max_response_bytes: int = Field(default=2_000_000, gt=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_seconds: float = Field(default=30.0, gt=0)
    chat: bool = Field(default=True, description="Whether the model speaks chat (usable by /v1/chat/completions).")
    input_template: dict[str, Any] | None = Field(default=None, description="SageMaker/http: chat→JSON mapping.")

    @field_validator("url")
    @classmethod
    def _url_https(cls, v: str | None, info: ValidationInfo) -> str | None:
        # The invoker sends prompts and the upstream's API key to this URL: never in clear text over a network.
        return None if v is None else require_https(v, "url", local=_local_mode(info))

    @field_validator("api_key_secret")
    @classmethod
    def _secret_prefix(cls, v: str | None) -> str | None:
        # The invoker's role may read only secrets under bulwark/upstream/ (least privilege, see template.yaml).
        if v is not None and not (v.startswith("bulwark/upstream/") or ":secret:bulwark/upstream/" in v):
            raise ValueError("api_key_secret must be a Secrets Manager name under bulwark/upstream/")
        return v


class ModelPrice(_Strict):
    """US dollars per million tokens (at most 6 decimals: held as exact integer micro-dollars)."""

    input_per_million_usd: Decimal = Field(ge=0)
    output_per_million_usd: Decimal = Field(ge=0)

    @field_validator("input_per_million_usd", "output_per_million_usd")
    @classmethod
    def _exact(cls, v: Decimal) -> Decimal:
        usd_to_micros(v, what="price")  # refuses a price finer than a micro-dollar per million tokens
        return v

    def price(self) -> Price:
        return Price(usd_to_micros(self.input_per_million_usd), usd_to_micros(self.output_per_million_usd))


class BudgetConfig(_Strict):
    """Spend caps in US dollars per UTC day and per UTC calendar month (either or both)."""

    day_usd: Decimal | None = Field(default=None, gt=0)
    month_usd: Decimal | None = Field(default=None, gt=0)

    @field_validator("day_usd", "month_usd")
    @classmethod
    def _exact(cls, v: Decimal | None) -> Decimal | None:
        if v is not None:
            usd_to_micros(v, what="budget")
        return v

    def micros(self) -> tuple[int | None, int | None]:
        return (
            None if self.day_usd is None else usd_to_micros(self.day_usd),
            None if self.month_usd is None else usd_to_micros(self.month_usd),
        )


class TenantLimits(_Strict):
    """Per-minute ceilings over all of a tenant's keys together."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class TenantConfig(_Strict):
    """A tenant's own limits and budgets, on top of each of its keys' (a key's tenant is stored with the key)."""

    limits: TenantLimits = TenantLimits()
    budget: BudgetConfig = BudgetConfig()


class SpendPolicy(_Strict):
    soft_threshold_percent: int = Field(
        default=80, gt=0, le=100, description="Spend share of a budget that emits a metric, an audit record, an alarm."
    )


class ModelConfig(_Strict):
    upstream: UpstreamConfig
    price: ModelPrice | None = Field(default=None, description="Overrides the built-in price table for this model.")
    description: str = ""
    input_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema for POST /v1/models/{model}/invoke bodies."
    )
    requests_per_minute: int | None = Field(default=None, gt=0, description="Ceiling over all callers of the model.")


class RoleLimits(_Strict):
    requests_per_minute: int = Field(default=60, gt=0)
    tokens_per_minute: int = Field(default=100_000, gt=0)
    daily_tokens: int = Field(default=2_000_000, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)


class RequestRules(_Strict):
    """Per-role caps the validator applies to a chat request."""

    max_messages: int = Field(default=64, gt=0)
    max_message_chars: int = Field(default=32_000, gt=0)
    max_total_chars: int = Field(default=200_000, gt=0)
    # Each string content, content-array element (text, image, refusal) and tool call counts one. The validator's work
    # per request grows with this count as well as with the characters: 30,000 one-character parts fit in 1 MiB.
    max_content_parts: int = Field(default=256, gt=0)
    max_tokens: int = Field(default=4096, gt=0)
    allowed_message_roles: tuple[Literal["system", "developer", "user", "assistant", "tool"], ...] = (
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
    )


class GuardrailPolicy(_Strict):
    prompt_injection: GuardMode = "block"
    pii_input: PiiMode = "redact"
    pii_output: OutputPiiMode = "redact"
    bedrock_guardrail_id: str | None = None
    bedrock_guardrail_version: str = "DRAFT"
    system_prompt_canary: bool = Field(
        default=False, description="Put a random marker in each system prompt; withhold answers that repeat it."
    )


class RiskPolicy(_Strict):
    """What a raised risk score leads to (see docs/SECURITY.md for the signals)."""

    flag_at: int = Field(default=40, ge=0, le=100)
    tighten_at: int = Field(default=60, ge=0, le=100)
    tighten_factor: float = Field(default=0.25, gt=0, le=1)
    refuse_api_keys_at: int | None = Field(default=None, ge=0, le=100)


class RoleConfig(_Strict):
    models: tuple[str, ...] = Field(default=(), description="Model names, or '*' for every model.")
    routes: tuple[Route, ...] = ALL_ROUTES
    limits: RoleLimits = RoleLimits()
    request: RequestRules = RequestRules()
    guardrails: GuardrailPolicy = GuardrailPolicy()
    risk: RiskPolicy = RiskPolicy()
    fail_open: bool = Field(default=False, description="Admit (logged, counted) when the limit store is down.")

    def allows_model(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class IssuerConfig(_Strict):
    """An OAuth 2.0 / OIDC issuer whose access tokens are accepted as Bearer credentials."""

    name: str
    issuer: str
    audience: tuple[str, ...]
    audience_claim: str = Field(
        default="aud", description="Claim checked against audience (Cognito access: client_id)."
    )
    jwks_url: str
    algorithms: tuple[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"], ...] = (
        "RS256",
    )
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    roles_claim: str = Field(default="scope", description="Claim with roles or scopes, e.g. cognito:groups.")
    role_map: dict[str, str] = Field(default_factory=dict, description="Claim value → Bulwark role.")
    default_role: str | None = None
    required_claims: tuple[str, ...] = ("exp", "iat", "sub")
    tenant_claim: str | None = None
    jwks_cache_seconds: int = Field(default=600, gt=0)
    jwks_min_refresh_seconds: int = Field(default=60, gt=0)
    max_token_bytes: int = Field(default=8192, gt=0)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_https(cls, v: str, info: ValidationInfo) -> str:
        # Fetching keys over plain HTTP would let a network attacker mint tokens; loopback is for local runs.
        return require_https(v, "jwks_url", local=_local_mode(info))

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class FailedAuthPolicy(_Strict):
    threshold: int = Field(default=20, gt=0, description="Failed attempts per source IP within the window.")
    window_seconds: int = Field(default=300, gt=0)
    cooldown_seconds: int = Field(default=900, gt=0)
    key_threshold: int = Field(
        default=20,
        gt=0,
        description="Wrong secrets per key id within the window before it is reported (never refuses the valid one).",
    )
    trusted_cidrs: tuple[str, ...] = Field(
        default=(),
        description="Sources never counted nor cooled down (e.g. a shared corporate NAT or a partner's egress).",
    )

    @field_validator("trusted_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            ipaddress.ip_network(c, strict=False)
        return v


class NetworkPolicy(_Strict):
    allow_cidrs: tuple[str, ...] = Field(default=(), description="If set, only these sources may call at all.")
    deny_cidrs: tuple[str, ...] = ()
    failed_auth: FailedAuthPolicy = FailedAuthPolicy()

    @field_validator("allow_cidrs", "deny_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            ipaddress.ip_network(c, strict=False)
        return v


class ParsingLimits(_Strict):
    max_body_bytes: int = Field(default=1_048_576, gt=0, le=6_000_000)
    max_depth: int = Field(default=32, gt=0, le=256)
    max_number_digits: int = Field(default=40, gt=0, le=4300)


class LoggingPolicy(_Strict):
    log_bodies: bool = Field(default=False, description="Log request/response bodies (always redacted).")


class Policy(_Strict):
    version: Literal[1] = 1
    default_model: str | None = None
    models: dict[str, ModelConfig]
    roles: dict[str, RoleConfig]
    issuers: tuple[IssuerConfig, ...] = ()
    network: NetworkPolicy = NetworkPolicy()
    parsing: ParsingLimits = ParsingLimits()
    logging: LoggingPolicy = LoggingPolicy()
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    spend: SpendPolicy = SpendPolicy()

    @model_validator(mode="after")
    def _references(self) -> Self:
        for role_name, role in self.roles.items():
            for m in role.models:
                if m != "*" and m not in self.models:
                    raise ValueError(f"role '{role_name}' names model '{m}', which is not in models")
        for iss in self.issuers:
            for target in [*iss.role_map.values(), *([iss.default_role] if iss.default_role else [])]:
                if target not in self.roles:
                    raise ValueError(f"issuer '{iss.name}' maps to role '{target}', which is not in roles")
        if self.default_model and self.default_model not in self.models:
            raise ValueError(f"default_model '{self.default_model}' is not in models")
        for name, model in self.models.items():
            if model.input_schema is not None:
                # A broken schema is an error when the policy loads, not a 500 on the first invoke request.
                from bulwark.validation.invoke_schema import compile_schema

                try:
                    compile_schema(model.input_schema)
                except Exception as exc:
                    raise ValueError(f"model '{name}': input_schema is not a valid JSON Schema ({exc})") from None
        return self

    def role(self, name: str) -> RoleConfig | None:
        return self.roles.get(name)

    def price_of(self, model: str) -> Price:
        """The policy's price, else the built-in default for the model, else free (no spend counted)."""
        cfg = self.models.get(model)
        if cfg is not None and cfg.price is not None:
            return cfg.price.price()
        default = DEFAULT_PRICES_USD_PER_MILLION.get(model)
        if default is None:
            return FREE
        return Price(usd_to_micros(default[0]), usd_to_micros(default[1]))

    def models_for(self, role: RoleConfig) -> list[str]:
        return sorted(m for m in self.models if role.allows_model(m))


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file, line and field."""


def _strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_lines(v) for k, v in obj.items() if k != "__lines__"}
    if isinstance(obj, list):
        return [_strip_lines(v) for v in obj]
    return obj


def _line_of(raw: Any, loc: tuple[int | str, ...]) -> int | None:
    line: int | None = None
    node = raw
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(part, line)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


@lru_cache(maxsize=1)
def _line_loader() -> Any:
    """SafeLoader that remembers the line of every mapping key, so errors can name it. Made on first use: importing
    YAML costs ~20 ms of a cold start, and a deployed function reads the policy's JSON twin instead."""
    import yaml

    class LineLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        mapping = loader.construct_mapping(node, deep=True)
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        mapping_with_lines = dict(mapping)
        mapping_with_lines["__lines__"] = lines
        return mapping_with_lines

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return LineLoader


def parse_policy(text: str, source: str = "<policy>", *, local: bool | None = None) -> Policy:
    import yaml

    try:
        # A SafeLoader subclass (it only records line numbers).
        raw = yaml.load(text, Loader=_line_loader())  # noqa: S506  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML ({getattr(exc, 'problem', 'syntax error')})") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: the policy must be a YAML mapping")
    try:
        return Policy.model_validate(_strip_lines(raw), context=_context(local))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(raw, loc)
            where = f"{source}:{line}" if line else source
            field = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{where}: {field}: {err['msg']}")
        raise PolicyError("\n".join(problems)) from None


def _context(local: bool | None) -> dict[str, bool] | None:
    # None: the environment decides (BULWARK_LOCAL=1 under `bulwark local`).
    return None if local is None else {"local": local}


def load_policy_file(path: str | Path, *, local: bool | None = None) -> Policy:
    """The policy in `path`. `local`: validate as `bulwark local` runs it (plain http to loopback allowed); None
    reads BULWARK_LOCAL."""
    p = Path(path)
    try:
        source = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read the policy file ({exc.strerror})") from None
    document = read_twin(p, source)
    if isinstance(document, dict):
        try:
            return Policy.model_validate(document, context=_context(local))
        except ValidationError:
            pass  # parsed again below, for errors that name their line
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{p}: the policy file is not UTF-8") from None
    return parse_policy(text, str(p), local=local)


_SHIPPED_POLICY = str(Path(__file__).with_name("policy.yaml"))


def default_policy_path() -> Path:
    """The policy shipped in the layer (deployed) unless BULWARK_POLICY_FILE points elsewhere."""
    return Path(os.environ.get("BULWARK_POLICY_FILE") or _SHIPPED_POLICY)


_RECHECK_SECONDS = 1.0
_last_check: list[tuple[float, str, Policy]] = []
_source: list[Any] = []  # the container's bulwark.policy_source.PolicySource, made at the first slow path


def current_policy() -> Policy:
    """The policy in force for this container: AppConfig's when the function names a profile and one is deployed,
    else the policy file's; a new version is taken only once it validates (bulwark.policy_source).

    Every request asks for it several times: the sources are looked at no more than once a second."""
    now = time.monotonic()
    where = os.environ.get("BULWARK_POLICY_FILE") or _SHIPPED_POLICY
    if _last_check and now - _last_check[0][0] < _RECHECK_SECONDS and _last_check[0][1] == where:
        return _last_check[0][2]  # the fast path: no Path objects, no system call
    if not _source:
        from bulwark.policy_source import PolicySource

        _source.append(PolicySource())
    policy: Policy = _source[0].current(where)
    _last_check[:] = [(now, where, policy)]
    return policy


def reset_policy_source() -> None:
    """Forget the policy in force and its sources (tests that change the environment between cases)."""
    _source.clear()
    _last_check.clear()


def policy_json_schema() -> dict[str, Any]:
    return Policy.model_json_schema()
