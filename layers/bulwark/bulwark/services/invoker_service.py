"""The invoker function's service: the only code that calls a model.

It receives the validator's canonical payload (never the raw client body), calls the model's upstream with a
deadline, retries and a circuit breaker (bulwark.upstreams.guard), filters the output with the same detectors as the
validator, and reports usage for settlement. Errors come back as data (InvokerResponse.error).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from bulwark.auth.invoker_trust import MacVerifier, TrustRefused, TrustUnavailable
from bulwark.errors import (
    BulwarkError,
    ContentPolicyViolation,
    InvalidRequest,
    PermissionDenied,
    ServiceUnavailable,
    UpstreamError,
)
from bulwark.observability.audit import emit_audit
from bulwark.policy import ModelConfig, Policy, current_policy
from bulwark.services.invoker_client import InvokerRequest, InvokerResponse, InvokerUsage
from bulwark.settings import Settings, settings
from bulwark.store.idempotency import Idempotency
from bulwark.streaming.hop import end_record, sse_record
from bulwark.streaming.output_filter import filter_completion, filter_json, guard_completion
from bulwark.streaming.relay import StreamOutcome, relay_chat


class InvokerService:
    def __init__(
        self,
        *,
        policy: Callable[[], Policy],
        upstream_for: Callable[[str, ModelConfig], Any],
        logger: Logger,
        metrics: Metrics,
        idempotency: Idempotency | None = None,
        guardrail_for: Callable[[str, str], Any] | None = None,
        trust: MacVerifier,
    ) -> None:
        self._trust = trust
        self._guardrail_for = guardrail_for
        self._policy = policy
        self._upstream_for = upstream_for
        self._log = logger
        self._metrics = metrics
        self._idempotency = idempotency

    def handle(self, raw_event: dict[str, Any]) -> dict[str, Any] | Iterator[bytes]:
        """A dict for Invoke; for a streamed chat request (transport "stream"), the hop records as they are made."""
        try:
            req = InvokerRequest.model_validate(raw_event)
        except ValidationError:
            # Only the validator may invoke this function; anything else is a bug or an intrusion.
            self._log.error("malformed invoker request refused")
            return InvokerResponse.from_error(InvalidRequest()).model_dump()
        streamed = req.transport == "stream" and req.stream and req.route == "chat"
        refused = self._refuse_untrusted(req)
        if refused is not None:
            # A streamed request is answered on the stream: its refusal is the `end` record, as any early error.
            return iter([end_record(refused.model_dump_json())]) if streamed else refused.model_dump()
        if streamed:
            return self._stream_records(req)  # never replayed: a stream is not stored for Idempotency-Key
        if req.idempotency_key and self._idempotency is not None:
            try:
                result = self._idempotency.run(
                    req.principal,
                    req.idempotency_key,
                    f"{req.route}:{req.model}:{req.stream}:{req.payload}",
                    lambda: {**self._call(req).model_dump(), "origin_request_id": req.request_id},
                    deadline_ms=req.deadline_epoch_ms,
                )
            except BulwarkError as exc:
                return InvokerResponse.from_error(exc).model_dump()
            # A stored result from an earlier request: the model was not called (or billed) this time.
            result["replayed"] = result.pop("origin_request_id", req.request_id) != req.request_id
            return result
        return self._call(req).model_dump()

    def _prepare(self, req: InvokerRequest) -> tuple[Any, float, dict[str, Any], Any | None]:
        """Upstream, deadline, payload and Bedrock guardrail of one call (the input check done)."""
        model_cfg = self._policy().models.get(req.model)
        if model_cfg is None:
            raise PermissionDenied()
        upstream = self._upstream_for(req.model, model_cfg)
        deadline = time.monotonic() + max(0.5, req.deadline_epoch_ms / 1000 - time.time())
        payload = json.loads(req.payload)
        guardrail = self._bedrock_guardrail(req.role)
        if guardrail is not None:
            self._check_input(guardrail, req.route, payload)
        return upstream, deadline, payload, guardrail

    def _stream_records(self, req: InvokerRequest) -> Iterator[bytes]:
        """Open the upstream stream, relay it chunk by chunk as hop records, end with the usage to settle. A failure
        before the first chunk is an `end` record with the error (the validator answers it as a normal error)."""
        started = time.perf_counter()
        outcome = StreamOutcome()
        try:
            upstream, deadline, payload, guardrail = self._prepare(req)
            chunks = upstream.chat_stream(payload, deadline=deadline)
        except BulwarkError as exc:
            out = InvokerResponse.from_error(exc)
        except Exception:
            self._log.exception("upstream adapter failed")
            out = InvokerResponse.from_error(UpstreamError())
        else:
            try:
                for event in self._relay(chunks, req, guardrail, outcome):
                    yield sse_record(event)
            finally:
                # Runs on GeneratorExit too (the validator went away): the relay has closed the upstream call and
                # counted what was generated; this line is the invoker's record of it.
                self._log_call(req, outcome_response(outcome), started, outcome)
            yield end_record(outcome_response(outcome, upstream_ms=_ms(started)).model_dump_json())
            return
        if out.error is not None:
            self._metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
            self._log.warning("upstream call failed", extra={"model": req.model, "code": out.error.code})
        out.upstream_ms = _ms(started)
        yield end_record(out.model_dump_json())

    def _log_call(self, req: InvokerRequest, out: InvokerResponse, started: float, outcome: StreamOutcome) -> None:
        upstream_ms = _ms(started)
        self._metrics.add_metric(name="UpstreamLatency", unit=MetricUnit.Milliseconds, value=upstream_ms)
        if outcome.error is not None:
            self._metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
        self._log.info(
            "upstream stream",
            extra={
                "model": req.model,
                "route": req.route,
                "ok": outcome.error is None,
                "code": outcome.error.code if outcome.error else "",
                "completed": outcome.completed,
                "client_disconnected": outcome.disconnected,
                "upstream_ms": upstream_ms,
                "prompt_tokens": out.usage.prompt_tokens,
                "completion_tokens": out.usage.completion_tokens,
                "usage_estimated": out.usage.estimated,
            },
        )

    def _refuse_untrusted(self, req: InvokerRequest) -> InvokerResponse | None:
        """Only the validator's signed, unexpired, first-seen request is served; the role must still allow the
        model. A refusal is audited and counted (ForgedInvocations, alarmed in template.yaml)."""
        degraded = self._trust.degraded
        try:
            self._trust.verify(req)
            role = self._policy().roles.get(req.role)
            if role is None or not role.allows_model(req.model):
                raise TrustRefused("role_may_not_use_model")
        except TrustRefused as exc:
            self._metrics.add_metric(name="ForgedInvocations", unit=MetricUnit.Count, value=1)
            emit_audit(
                self._log,
                {
                    "request_id": req.request_id,
                    "event": "invoker_request_refused",
                    "reason": exc.reason,
                    "principal": req.principal,
                    "role": req.role,
                    "model": req.model,
                    "status": 403,
                },
            )
            return InvokerResponse.from_error(PermissionDenied())
        except TrustUnavailable as exc:
            self._log.warning("invoker trust could not be checked", extra={"code": exc.code})
            return InvokerResponse.from_error(ServiceUnavailable(exc.message, code=exc.code, retry_after=1))
        if self._trust.degraded != degraded:
            self._log.warning(
                "replay check without the store: this container's memory only", extra={"model": req.model}
            )
        return None

    def _call(self, req: InvokerRequest) -> InvokerResponse:
        started = time.perf_counter()
        try:
            upstream, deadline, payload, guardrail = self._prepare(req)
            if req.route == "invoke":
                body, usage = upstream.invoke(payload, deadline=deadline)
                hits: list[str] = []
                body = filter_json(body, req.output_pii, hits)
                out = InvokerResponse(
                    ok=True,
                    body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    usage=_usage(usage),
                    output_hits=hits,
                )
            elif req.stream:
                out = self._stream(upstream.chat_stream(payload, deadline=deadline), req, guardrail)
            else:
                result = upstream.chat(payload, deadline=deadline)
                hits = filter_completion(result.body, req.output_pii)
                if guardrail is not None:
                    hits.extend(guard_completion(guardrail, result.body))
                if req.canary is not None:
                    hits.extend(self._withhold_leaks(result.body, req.canary))
                out = InvokerResponse(
                    ok=True,
                    body=json.dumps(result.body, separators=(",", ":"), ensure_ascii=False),
                    usage=_usage(result.usage),
                    output_hits=hits,
                )
        except BulwarkError as exc:
            self._metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
            self._log.warning("upstream call failed", extra={"model": req.model, "code": exc.code})
            out = InvokerResponse.from_error(exc)
        except Exception:
            self._log.exception("upstream adapter failed")
            self._metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
            out = InvokerResponse.from_error(UpstreamError())
        out.upstream_ms = round((time.perf_counter() - started) * 1000, 3)
        self._metrics.add_metric(name="UpstreamLatency", unit=MetricUnit.Milliseconds, value=out.upstream_ms)
        self._log.info(
            "upstream call",
            extra={
                "model": req.model,
                "route": req.route,
                "ok": out.ok,
                "code": out.error.code if out.error else "",
                "upstream_ms": out.upstream_ms,
                "prompt_tokens": out.usage.prompt_tokens,
                "completion_tokens": out.usage.completion_tokens,
                # When the upstream reports no usage, the tokens are estimated: said here, for whoever settles them.
                "usage_estimated": out.usage.estimated,
            },
        )
        return out

    def _bedrock_guardrail(self, role_name: str) -> Any | None:
        """The role's Amazon Bedrock guardrail (ApplyGuardrail), if one is configured. Only the invoker holds the
        Bedrock permissions, so the check runs here, on the canonical payload, before and after the model call."""
        role = self._policy().role(role_name)
        if role is None or not role.guardrails.bedrock_guardrail_id or self._guardrail_for is None:
            return None
        return self._guardrail_for(role.guardrails.bedrock_guardrail_id, role.guardrails.bedrock_guardrail_version)

    def _withhold_leaks(self, body: dict[str, Any], canary: str) -> list[str]:
        """An answer that repeats the system prompt's canary is withheld, as a guardrail block is; counted and
        reported for the audit record (bulwark.guardrails.canary)."""
        from bulwark.guardrails.canary import HIT, leaked

        hits: list[str] = []
        for choice in body.get("choices") or []:
            msg = choice.get("message") or {}
            texts = [msg.get("content"), msg.get("refusal")]
            texts += [
                (c.get("function") or {}).get("arguments") for c in msg.get("tool_calls") or [] if isinstance(c, dict)
            ]
            if any(isinstance(t, str) and leaked(t, canary) for t in texts):
                msg["content"] = ""
                msg.pop("tool_calls", None)
                choice["finish_reason"] = "content_filter"
                hits.append(HIT)
        if hits:
            self._metrics.add_metric(name="CanaryLeaks", unit=MetricUnit.Count, value=len(hits))
            self._log.warning("system-prompt canary in the model's answer: withheld", extra={"choices": len(hits)})
        return hits

    @staticmethod
    def _check_input(guardrail: Any, route: Literal["chat", "invoke"], payload: Any) -> None:
        # Imported here: only roles with a Bedrock guardrail pay for the chat schema at the invoker's cold start.
        from bulwark.guardrails.texts import payload_texts

        texts = payload_texts(route, payload)  # the same list the validator's detectors read
        blocked, reasons = guardrail.check(texts, source="INPUT")
        if blocked:
            raise ContentPolicyViolation(
                f"The request was refused by the content policy (rule: bedrock_guardrail:{','.join(reasons)})."
            )

    def _stream(self, chunks: Any, req: InvokerRequest, guardrail: Any | None) -> InvokerResponse:
        """The whole stream, relayed through the output guardrails into one SSE body (the buffered invoke path)."""
        outcome = StreamOutcome()
        events = list(self._relay(chunks, req, guardrail, outcome))
        if outcome.error is not None and len(events) == 1:
            raise outcome.error  # failed before anything was produced: an ordinary error response
        out = outcome_response(outcome)
        out.body = b"".join(events).decode("utf-8")
        return out

    def _relay(self, chunks: Any, req: InvokerRequest, guardrail: Any | None, outcome: StreamOutcome) -> Any:
        return relay_chat(
            chunks,
            model=req.model,
            pii_mode=req.output_pii,
            include_usage=req.include_usage,
            prompt_estimate=_prompt_estimate(req.payload),
            outcome=outcome,
            guardrail=guardrail,
            log=self._log,
            canary=req.canary,
        )


def outcome_response(outcome: StreamOutcome, *, upstream_ms: float = 0.0) -> InvokerResponse:
    """A relayed stream's result for settlement. ok: whatever ended the stream, what was generated is counted."""
    return InvokerResponse(
        ok=True,
        content_type="text/event-stream",
        usage=InvokerUsage(
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            estimated=outcome.estimated,
        ),
        output_hits=outcome.hits,
        upstream_ms=upstream_ms,
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _prompt_estimate(payload: str) -> int:
    """Prompt tokens when a stream ends before the upstream reports usage (same estimate as the adapters')."""
    from bulwark.upstreams.base import estimate_tokens, message_text

    messages = json.loads(payload).get("messages") or []
    return sum(estimate_tokens(message_text(m)) for m in messages if isinstance(m, dict))


def _usage(u: Any) -> InvokerUsage:
    return InvokerUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, estimated=u.estimated)


def build(logger: Logger, metrics: Metrics, cfg: Settings | None = None) -> InvokerService:
    from bulwark.upstreams import UpstreamClients, build_upstream

    cfg = cfg or settings()
    clients = UpstreamClients()
    cache: dict[str, tuple[ModelConfig, Any]] = {}

    def upstream_for(name: str, model_cfg: ModelConfig) -> Any:
        hit = cache.get(name)
        if hit and hit[0] is model_cfg:
            return hit[1]
        up_cfg = model_cfg.upstream
        if up_cfg.kind == "demo" and cfg.demo_model_url:
            up_cfg = up_cfg.model_copy(update={"url": cfg.demo_model_url})
        upstream = build_upstream(name, up_cfg, clients=clients)
        cache[name] = (model_cfg, upstream)
        return upstream

    from bulwark.aws import clients as aws

    if not cfg.idempotency_table or not cfg.invoker_mac_key:
        # Both are in the template: without them no request could be proven the validator's (fail closed at init).
        raise RuntimeError("BULWARK_IDEMPOTENCY_TABLE and BULWARK_INVOKER_MAC_KEY must be set")
    idempotency = Idempotency(cfg.idempotency_table, aws.dynamodb)  # the lean client, made at first use
    trust = MacVerifier(aws.kms, cfg.invoker_mac_key, idempotency.claim_once)
    guardrails: dict[tuple[str, str], Any] = {}

    def guardrail_for(guardrail_id: str, version: str) -> Any:
        from bulwark.aws import clients as aws
        from bulwark.guardrails.bedrock_guardrail import BedrockGuardrail

        key = (guardrail_id, version)
        if key not in guardrails:
            guardrails[key] = BedrockGuardrail(aws.client("bedrock-runtime", read_timeout=5.0), guardrail_id, version)
        return guardrails[key]

    return InvokerService(
        policy=current_policy,
        upstream_for=upstream_for,
        logger=logger,
        metrics=metrics,
        idempotency=idempotency,
        guardrail_for=guardrail_for,
        trust=trust,
    )
