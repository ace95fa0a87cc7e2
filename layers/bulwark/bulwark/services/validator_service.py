"""The validator function's service: refuse early, parse and check everything, admit against limits, call the invoker.

Order matters and is cheapest-first: authorizer refusal → route → content type → size → JSON → schema → model
permission → sanitization and guardrails → admission (one conditional write) → invoker → settlement. Anything
refused before admission consumes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from bulwark.api.proxy_event import ProxyEvent
from bulwark.api.responses import error_response, response
from bulwark.api.routes import route_of
from bulwark.auth.context import CallerContext
from bulwark.aws import clients as aws
from bulwark.errors import (
    BulwarkError,
    ExpiredCredentials,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    StoreUnavailable,
    UnsupportedMediaType,
)
from bulwark.guardrails.apply import apply_input_guardrails, apply_json_guardrails
from bulwark.guardrails.canary import HIT as CANARY_HIT
from bulwark.guardrails.canary import add_canary, new_canary
from bulwark.guardrails.pii_memo import PiiMemo
from bulwark.limits.admission import Admission, Allowance, TenantBudget
from bulwark.limits.gcra import rate_limit_headers
from bulwark.limits.spend import Price, soft_crossed
from bulwark.observability.audit import emit_audit
from bulwark.observability.logs import log_body
from bulwark.observability.metrics import count
from bulwark.policy import Policy, PolicyError, RoleConfig, current_policy
from bulwark.services.invoker_client import InvokerClient, InvokerRequest, InvokerResponse, InvokerUsage
from bulwark.settings import Settings, settings
from bulwark.store.counters_table import CountersTable
from bulwark.streaming.forward import Forward
from bulwark.streaming.http import StreamingResponse
from bulwark.validation.invoke_schema import validate_invoke_body
from bulwark.validation.jsonparse import parse_json_body
from bulwark.validation.sanitize import sanitize_chat

# API Gateway's integration limit is 29 s; leave room for the settlement write and the response.
DEADLINE_SECONDS = 27.0
# A streamed response may last 15 minutes through API Gateway; the model call ends before, with room to settle.
STREAM_DEADLINE_SECONDS = 14 * 60.0


@dataclass
class Audit:
    """The facts of one request, logged once as the audit record."""

    request_id: str
    principal: str = ""
    role: str = ""
    tenant: str = ""
    source_ip: str = ""
    route: str = ""
    model: str = ""
    status: int = 0
    code: str = ""
    verdicts: dict[str, str] = field(default_factory=dict)
    tokens_reserved: int = 0
    cost_reserved_micro_usd: int = 0
    cost_micro_usd: int = 0  # the settled cost of this request (integer micro-dollars)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    store_writes: int = 0
    latency_ms: float = 0.0
    upstream_ms: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    streamed: bool = False

    def record(self) -> dict[str, Any]:
        """The audit record: the facts, not the bookkeeping of a stream."""
        return {k: v for k, v in self.__dict__.items() if k not in ("started", "streamed")}


@dataclass(frozen=True)
class _SpendTerms:
    """What settling a request's money needs: its model's price, the caller's budgets, the alert threshold."""

    price: Price
    allowance: Allowance
    soft_percent: int


@dataclass
class _Call:
    """What every step of one admitted-route request needs (instead of six parameters on each method)."""

    event: ProxyEvent
    policy: Policy
    role: RoleConfig
    caller: CallerContext
    audit: Audit
    headers: dict[str, str]


class ValidatorService:
    def __init__(
        self,
        *,
        policy: Callable[[], Policy],
        counters: CountersTable,
        invoker: InvokerClient,
        logger: Logger,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        pii_memo: PiiMemo | None = None,
    ) -> None:
        self._policy = policy
        self._counters = counters
        self._pii_memo = pii_memo
        self._invoker = invoker
        self._log = logger
        self._metrics = metrics
        self._clock = clock

    def handle(self, raw_event: dict[str, Any]) -> dict[str, Any] | StreamingResponse:
        started = time.perf_counter()
        try:
            event = ProxyEvent.model_validate(raw_event)
        except ValidationError:
            event = ProxyEvent()
        audit = Audit(request_id=event.requestContext.requestId, source_ip=event.requestContext.identity.sourceIp)
        headers: dict[str, str] = {}
        try:
            result = self._handle(event, audit, headers)
        except BulwarkError as exc:
            audit.status, audit.code = exc.status, exc.code
            self._count_refusal(exc, audit)
            result = error_response(exc, request_id=audit.request_id, headers=headers)
        except Exception:
            self._log.exception("unhandled error")
            exc2 = InternalError()
            audit.status, audit.code = exc2.status, exc2.code
            result = error_response(exc2, request_id=audit.request_id, headers=headers)
        count(self._metrics, "Requests", tenant=_tenant(audit))
        if audit.streamed:
            return result  # its audit record is written when the stream ends
        audit.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        self._flush_refunds()
        emit_audit(self._log, audit.record(), every_invocation=True)
        return result

    # ------------------------------------------------------------------ routing
    def _handle(self, event: ProxyEvent, audit: Audit, headers: dict[str, str]) -> dict[str, Any] | StreamingResponse:
        try:
            caller = CallerContext.model_validate(event.requestContext.authorizer or {})
        except ValidationError:
            caller = CallerContext()  # a context the authorizer did not write: refused below, fail closed
        if not caller.principal:
            raise InternalError()  # the integration must never run without the authorizer: fail closed
        audit.principal, audit.role, audit.tenant = caller.principal, caller.role, caller.tenant
        refusal = caller.refusal_error()
        if refusal is not None:
            raise refusal
        if caller.expires_at is not None and self._clock() >= caller.expires_at:
            raise ExpiredCredentials()  # a decision cached by API Gateway must not outlive the key
        try:
            policy = self._policy()
        except PolicyError:
            # Fail closed: without a readable policy nothing is allowed, and the caller is told to retry.
            self._log.error("policy file unavailable")
            raise ServiceUnavailable(
                "The service is not configured right now. Retry later.", code="policy_unavailable", retry_after=5
            ) from None
        role = policy.role(caller.role)
        if role is None:
            raise PermissionDenied("The caller's role is not configured.", code="role_not_allowed")
        route = route_of(event.httpMethod, event.resource)
        audit.route = route or event.resource
        if route is None:
            if event.resource.startswith("/v1/"):
                raise MethodNotAllowed()
            raise NotFound()
        if route not in role.routes:
            raise PermissionDenied("The caller's role may not use this route.", code="route_not_allowed")
        if route == "models":
            return self._list_models(policy, role, audit)
        _require_json(event)
        call = _Call(event, policy, role, caller, audit, headers)
        if route == "chat":
            return self._chat(call)
        return self._invoke(call)

    def _list_models(self, policy: Policy, role: RoleConfig, audit: Audit) -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "bulwark"} for m in policy.models_for(role)]
        audit.status = 200
        return response(200, {"object": "list", "data": data}, request_id=audit.request_id)

    def _parse(self, event: ProxyEvent, policy: Policy, audit: Audit) -> Any:
        """The body, size-checked before parsing and parsed by the hardened parser (never the raw bytes onward)."""
        p = policy.parsing
        body = event.body_bytes()
        doc = parse_json_body(
            body, max_bytes=p.max_body_bytes, max_depth=p.max_depth, max_number_digits=p.max_number_digits
        )
        log_body(self._log, "request", body, policy)
        audit.verdicts["json"] = "ok"
        return doc

    # ------------------------------------------------------------------ chat completions
    def _chat(self, call: _Call) -> dict[str, Any] | StreamingResponse:
        from bulwark.validation.chat import canonical_json, estimate_prompt_tokens, validate_chat_request

        event, policy, role, audit = call.event, call.policy, call.role, call.audit
        doc = self._parse(event, policy, audit)
        req = validate_chat_request(doc, role.request)
        audit.verdicts["schema"] = "ok"
        audit.model = req.model
        model_cfg = policy.models.get(req.model)
        if model_cfg is None or not role.allows_model(req.model) or not model_cfg.upstream.chat:
            raise PermissionDenied()  # one answer whether the model exists or not
        req = sanitize_chat(req)
        outcome = apply_input_guardrails(req, role.guardrails, pii_memo=self._pii_memo, caller=call.caller.principal)
        for kind, action in outcome.hits:
            audit.verdicts[f"guardrail:{kind}"] = action
            count(self._metrics, "GuardrailHits", kind=kind)
        req = outcome.request
        canary = new_canary() if role.guardrails.system_prompt_canary else None
        if canary is not None:
            req = add_canary(req, canary)
        max_out = (req.max_completion_tokens or req.max_tokens or role.request.max_tokens) * (req.n or 1)
        prompt = estimate_prompt_tokens(req)
        tokens = prompt + max_out
        payload = canonical_json(req).decode("utf-8")
        stream = bool(req.stream)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return self._admit_and_call(
            call,
            model=req.model,
            route="chat",
            payload=payload,
            tokens=tokens,
            cost=policy.price_of(req.model).cost_micros(prompt, max_out),
            stream=stream,
            include_usage=include_usage,
            prompt_tokens=prompt,
            canary=canary,
        )

    # ------------------------------------------------------------------ generic invoke
    def _invoke(self, call: _Call) -> dict[str, Any] | StreamingResponse:
        event, policy, role, audit = call.event, call.policy, call.role, call.audit
        model = (event.pathParameters or {}).get("model", "")
        audit.model = model
        model_cfg = policy.models.get(model)
        if model_cfg is None or not role.allows_model(model) or model_cfg.input_schema is None:
            raise PermissionDenied()
        doc = self._parse(event, policy, audit)
        validate_invoke_body(doc, model_cfg.input_schema)
        audit.verdicts["schema"] = "ok"
        outcome = apply_json_guardrails(doc, role.guardrails)  # every string the schema let through, as chat texts
        for kind, action in outcome.hits:
            audit.verdicts[f"guardrail:{kind}"] = action
            count(self._metrics, "GuardrailHits", kind=kind)
        if outcome.doc is not doc:  # redacted: the placeholders must still satisfy the model's schema
            doc = outcome.doc
            validate_invoke_body(doc, model_cfg.input_schema)
        payload = json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        tokens = len(payload) // 3 + role.request.max_tokens
        return self._admit_and_call(
            call,
            model=model,
            route="invoke",
            payload=payload,
            tokens=tokens,
            cost=policy.price_of(model).cost_micros(len(payload) // 3, role.request.max_tokens),
            stream=False,
            include_usage=False,
        )

    # ------------------------------------------------------------------ admission, call, settlement
    def _admit_and_call(
        self,
        call: _Call,
        *,
        model: str,
        route: str,
        payload: str,
        tokens: int,
        cost: int,
        stream: bool,
        include_usage: bool,
        prompt_tokens: int = 0,
        canary: str | None = None,
    ) -> dict[str, Any] | StreamingResponse:
        event, policy, role, caller, audit, headers = (
            call.event,
            call.policy,
            call.role,
            call.caller,
            call.audit,
            call.headers,
        )
        allowance = _allowance(role, caller, policy)
        spend = _SpendTerms(policy.price_of(model), allowance, policy.spend.soft_threshold_percent)
        audit.tokens_reserved, audit.cost_reserved_micro_usd = tokens, cost
        admission: Admission | None = None
        try:
            admission = self._counters.admit(
                caller.principal,
                allowance,
                tokens,
                model=model,
                model_rpm=policy.models[model].requests_per_minute,
                cost=cost,
            )
        except RateLimited as exc:
            audit.verdicts["limits"] = exc.code
            count(self._metrics, "Throttles", limit=exc.code)
            raise
        except StoreUnavailable:
            if not role.fail_open:
                audit.verdicts["limits"] = "store_unavailable"
                raise
            audit.verdicts["limits"] = "fail_open"
            self._log.warning("limit store unavailable: admitted by fail_open policy", extra={"role": caller.role})
            self._metrics.add_metric(name="FailOpenAdmissions", unit=MetricUnit.Count, value=1)
        audit.verdicts.setdefault("limits", "admitted")
        if admission is not None:
            audit.store_writes += admission.writes
            headers.update(rate_limit_headers(admission.states))
        if stream and self._invoker.streams:
            return self._stream_call(call, admission, model, payload, include_usage, prompt_tokens, canary, spend)
        result: InvokerResponse | None = None
        try:
            result = self._invoker.invoke(
                InvokerRequest(
                    request_id=audit.request_id,
                    principal=caller.principal,
                    role=caller.role,
                    model=model,
                    route=route,
                    payload=payload,
                    stream=stream,
                    include_usage=include_usage,
                    output_pii=role.guardrails.pii_output,
                    deadline_epoch_ms=int((self._clock() + DEADLINE_SECONDS) * 1000),
                    idempotency_key=_idempotency_key(event),
                    canary=canary,
                )
            )
        finally:
            called = result is not None and result.ok and not result.replayed  # a replay called no model
            self._settle(admission, result.usage if called and result is not None else None, audit, spend)
        audit.upstream_ms = result.upstream_ms
        audit.prompt_tokens, audit.completion_tokens = result.usage.prompt_tokens, result.usage.completion_tokens
        audit.usage_estimated = result.usage.estimated
        for hit in result.output_hits:
            audit.verdicts[f"output:{hit}"] = "block" if hit == CANARY_HIT else role.guardrails.pii_output
        if not result.ok:
            self._metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
        result.raise_for_error()
        log_body(self._log, "response", result.body, policy)
        count(self._metrics, "TokensUsed", result.usage.total, tenant=_tenant(audit), model=model)
        audit.status = 200
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return response(
            200, result.body, request_id=audit.request_id, headers=headers, content_type=result.content_type
        )

    def _stream_call(
        self,
        call: _Call,
        admission: Admission | None,
        model: str,
        payload: str,
        include_usage: bool,
        prompt_tokens: int,
        canary: str | None,
        spend: _SpendTerms,
    ) -> dict[str, Any] | StreamingResponse:
        """The invoker's stream, forwarded as it comes. Settled once, however it ends (bulwark.streaming.forward)."""
        caller, audit, role = call.caller, call.audit, call.role
        request = InvokerRequest(
            request_id=audit.request_id,
            principal=caller.principal,
            role=caller.role,
            model=model,
            route="chat",
            payload=payload,
            stream=True,
            transport="stream",
            include_usage=include_usage,
            output_pii=role.guardrails.pii_output,
            deadline_epoch_ms=int((self._clock() + STREAM_DEADLINE_SECONDS) * 1000),
            canary=canary,
        )
        try:
            forward = Forward(self._invoker.invoke_stream(request), prompt_tokens)
            failed = forward.first()
        except BulwarkError:
            self._settle(admission, None, audit, spend)
            self._metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
            raise
        if failed is not None:  # the invoker answered before any chunk: an ordinary response
            self._settle(admission, failed.usage if failed.ok else None, audit, spend)
            self._record_result(failed, audit, role)
            failed.raise_for_error()
            return response(200, "data: [DONE]\n\n", request_id=audit.request_id, content_type="text/event-stream")

        def on_end(result: InvokerResponse, how: str) -> None:
            self._settle(admission, result.usage if result.ok else None, audit, spend)
            self._record_result(result, audit, role)
            audit.verdicts["stream"] = how
            count(self._metrics, "TokensUsed", result.usage.total, tenant=_tenant(audit), model=model)
            self._end_stream(audit)

        audit.status = 200
        audit.streamed = True
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "x-request-id": audit.request_id,
            **call.headers,
        }
        return StreamingResponse(200, headers, forward.body(on_end))

    @staticmethod
    def _record_result(result: InvokerResponse, audit: Audit, role: RoleConfig) -> None:
        audit.upstream_ms = result.upstream_ms
        audit.prompt_tokens, audit.completion_tokens = result.usage.prompt_tokens, result.usage.completion_tokens
        audit.usage_estimated = result.usage.estimated
        for hit in result.output_hits:
            audit.verdicts[f"output:{hit}"] = "block" if hit == CANARY_HIT else role.guardrails.pii_output

    def _end_stream(self, audit: Audit) -> None:
        """A stream's audit record, when it ends (its latency is the whole stream's)."""
        audit.latency_ms = round((time.perf_counter() - audit.started) * 1000, 3)
        self._flush_refunds()
        emit_audit(self._log, audit.record(), every_invocation=True)
        try:
            self._metrics.flush_metrics()  # the handler's own flush ran when the stream began
        except Exception:  # metrics must never break a finished stream
            self._log.warning("metrics flush failed after a stream")

    def _settle(
        self, admission: Admission | None, usage: InvokerUsage | None, audit: Audit, spend: _SpendTerms
    ) -> None:
        """The one place a request's tokens and money are settled (every path ends here, once): `usage` is what the
        model really did, None when no model was called (a failed or replayed call), which gives everything back."""
        used = usage.total if usage is not None else 0
        cost = spend.price.cost_micros(usage.prompt_tokens, usage.completion_tokens) if usage is not None else 0
        audit.cost_micro_usd = cost
        if cost:
            count(self._metrics, "SpendMicroUSD", cost, tenant=_tenant(audit), model=audit.model)
        if admission is None:
            return
        try:
            audit.store_writes += self._counters.settle(admission, used, defer_refund=True, actual_cost=cost)
        except StoreUnavailable:
            self._log.warning("settlement failed; the reservation stands until the window passes")
        self._budget_alerts(admission, spend, audit)

    def _budget_alerts(self, admission: Admission, spend: _SpendTerms, audit: Audit) -> None:
        """This request's settled cost took the period's spend, the key's or its tenant's, across the soft threshold:
        a metric the alarm watches and a mark in this request's audit record (`budget:day`, `budget:tenant:month`,
        ...). Judged on settled spend (the stored spend less this request's reservation, plus its real cost), so a
        reservation that is later given back raises no alert, and a key or tenant is told once per period, not on
        every request above the threshold."""
        pct = spend.soft_percent
        tenant = spend.allowance.tenant if admission.tenant is not None else None
        for scope, period, budget, stored in (
            ("key", "day", spend.allowance.budget_day, admission.spend_day),
            ("key", "month", spend.allowance.budget_month, admission.spend_month),
            ("tenant", "day", tenant.day if tenant else None, admission.tenant_spend_day),
            ("tenant", "month", tenant.month if tenant else None, admission.tenant_spend_month),
        ):
            before = stored - admission.reserved_cost
            if budget is not None and soft_crossed(before, before + audit.cost_micro_usd, budget, pct):
                audit.verdicts["budget:" + ("" if scope == "key" else "tenant:") + period] = f"soft_threshold_{pct}"
                count(self._metrics, "BudgetSoftThreshold", tenant=_tenant(audit), period=period, scope=scope)

    def shutdown(self) -> None:
        """The environment is going away: write every deferred refund now, or the caller's counters would keep
        tokens it did not use (over-charged until the day turns), away from the audit's totals."""
        try:
            self._counters.flush_pending(older_than_ms=0, max_writes=1_000_000)
        except BulwarkError:
            return

    def _flush_refunds(self) -> None:
        """Refunds deferred for callers that did not come back to this container go out within seconds."""
        try:
            self._counters.flush_pending()
        except BulwarkError:
            return

    def _count_refusal(self, exc: BulwarkError, audit: Audit) -> None:
        if exc.status < 500:
            count(self._metrics, "Refusals", tenant=_tenant(audit), code=exc.code)
        if exc.code == "content_policy_violation":
            count(self._metrics, "GuardrailHits", kind="blocked")
        if exc.status in (400, 413, 415):
            self._metrics.add_metric(name="ValidationRejections", unit=MetricUnit.Count, value=1)


def _require_json(event: ProxyEvent) -> None:
    ctype = (event.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType()


def _idempotency_key(event: ProxyEvent) -> str | None:
    key = event.header("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not (1 <= len(key) <= 255) or not key.isprintable():
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 printable characters.", param="Idempotency-Key"
        )
    return key


def _tenant(audit: Audit) -> str:
    """Metrics break down by tenant (a bounded, operator-chosen set), never by key (high cardinality)."""
    return audit.tenant or "none"


def _allowance(role: RoleConfig, caller: CallerContext, policy: Policy) -> Allowance:
    limits = role.limits.model_dump()
    limits.update({k: v for k, v in caller.limit_overrides.items() if k in limits})
    factor = role.risk.tighten_factor if caller.risk_action == "tighten" else 1.0
    return Allowance(
        requests_per_minute=max(1, int(limits["requests_per_minute"] * factor)),
        tokens_per_minute=max(1, int(limits["tokens_per_minute"] * factor)),
        daily_tokens=int(limits["daily_tokens"]),
        max_concurrent=limits.get("max_concurrent"),
        budget_day=caller.limit_overrides.get("budget_day_micro_usd"),
        budget_month=caller.limit_overrides.get("budget_month_micro_usd"),
        tenant=_tenant_budget(caller.tenant, policy),
    )


def _tenant_budget(tenant: str, policy: Policy) -> TenantBudget | None:
    """The caller's tenant's own limits and budgets, when the policy gives it any (keys of other tenants pay no
    extra write)."""
    cfg = policy.tenants.get(tenant) if tenant else None
    if cfg is None:
        return None
    day, month = cfg.budget.micros()
    rpm, tpm = cfg.limits.requests_per_minute, cfg.limits.tokens_per_minute
    if day is None and month is None and rpm is None and tpm is None:
        return None
    return TenantBudget(tenant, day, month, rpm, tpm)


def _mac_signer(cfg: Settings) -> Callable[[InvokerRequest], InvokerRequest]:
    from bulwark.auth.invoker_trust import MacSigner

    if not cfg.invoker_mac_key:
        raise RuntimeError("BULWARK_INVOKER_MAC_KEY is not set: the invoker refuses unsigned requests")
    return MacSigner(aws.kms, cfg.invoker_mac_key).sign


def build(logger: Logger, metrics: Metrics, cfg: Settings | None = None) -> ValidatorService:
    cfg = cfg or settings()
    return ValidatorService(
        policy=current_policy,
        counters=CountersTable(aws.dynamodb(), cfg.counters_table),
        invoker=InvokerClient(
            aws.lambda_client(),
            cfg.invoker_function or "",
            sign=_mac_signer(cfg),
            stream_client=aws.lambda_stream_client() if cfg.stream_responses else None,
        ),
        logger=logger,
        metrics=metrics,
        pii_memo=PiiMemo(cfg.pii_memo_chars),
    )
