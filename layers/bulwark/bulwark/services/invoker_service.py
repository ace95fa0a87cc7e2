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

    def handle(self, raw_event: dict[str, Any]) -> dict[str, Any]:
        try:
            req = InvokerRequest.model_validate(raw_event)
        except ValidationError:
            # Only the validator may invoke this function; anything else is a bug or an intrusion.
            self._log.error("malformed invoker request refused")
            return InvokerResponse.from_error(InvalidRequest()).model_dump()
        refused = self._refuse_untrusted(req)
        if refused is not None:
            return refused.model_dump()
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
        model_cfg = self._policy().models.get(req.model)
        try:
            if model_cfg is None:
                raise PermissionDenied()
            upstream = self._upstream_for(req.model, model_cfg)
            deadline = time.monotonic() + max(0.5, req.deadline_epoch_ms / 1000 - time.time())
            payload = json.loads(req.payload)
            guardrail = self._bedrock_guardrail(req.role)
            if guardrail is not None:
                self._check_input(guardrail, req.route, payload)
            if req.route == "invoke":
                body, usage = upstream.invoke(payload, deadline=deadline)
                hits: list[str] = []
                body = _filter_json(body, req.output_pii, hits)
                out = InvokerResponse(
                    ok=True,
                    body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    usage=_usage(usage),
                    output_hits=hits,
                )
            elif req.stream:
                out = self._stream(upstream.chat_stream(payload, deadline=deadline), req)
            else:
                result = upstream.chat(payload, deadline=deadline)
                hits = _filter_completion(result.body, req.output_pii)
                if guardrail is not None:
                    hits.extend(_guard_completion(guardrail, result.body))
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

    def _stream(self, chunks: Iterator[dict[str, Any]], req: InvokerRequest) -> InvokerResponse:
        """Collect the stream, filter the whole text (PII can straddle chunks), and re-emit it as OpenAI SSE."""
        collected = list(chunks)
        usage = InvokerUsage(estimated=True)
        texts: dict[int, list[str]] = {}
        for chunk in collected:
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = InvokerUsage(
                    prompt_tokens=int(u.get("prompt_tokens", 0)), completion_tokens=int(u.get("completion_tokens", 0))
                )
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    texts.setdefault(int(choice.get("index", 0)), []).append(delta["content"])
        hits: list[str] = []
        filtered: dict[int, str] = {}
        for idx, parts in texts.items():
            text, kinds = _filter_text("".join(parts), req.output_pii)
            filtered[idx] = text
            hits.extend(kinds)
        events: list[str] = []
        emitted: set[int] = set()
        for chunk in collected:
            if chunk.get("usage") and not chunk.get("choices"):
                continue
            out_choices = []
            for choice in chunk.get("choices") or []:
                idx = int(choice.get("index", 0))
                delta = dict(choice.get("delta") or {})
                if "content" in delta and isinstance(delta["content"], str):
                    # The filtered text goes out once, in the first content chunk; later content chunks carry none.
                    if idx in emitted:
                        del delta["content"]
                    else:
                        delta["content"] = filtered.get(idx, "")
                        emitted.add(idx)
                if not delta and choice.get("finish_reason") is None:
                    continue  # nothing left to say in this chunk
                out_choices.append({**choice, "delta": delta})
            if not out_choices:
                continue
            c = {k: v for k, v in chunk.items() if k != "usage"}
            c["choices"] = out_choices
            if req.include_usage:
                c["usage"] = None
            events.append("data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False) + "\n\n")
        if req.include_usage and collected:
            last = collected[-1]
            events.append(
                "data: "
                + json.dumps(
                    {
                        "id": last.get("id", ""),
                        "object": "chat.completion.chunk",
                        "created": last.get("created", 0),
                        "model": req.model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total,
                        },
                    },
                    separators=(",", ":"),
                )
                + "\n\n"
            )
        events.append("data: [DONE]\n\n")
        return InvokerResponse(
            ok=True, body="".join(events), content_type="text/event-stream", usage=usage, output_hits=hits
        )


def _filter_json(value: Any, mode: str, hits: list[str]) -> Any:
    """A legacy model's JSON answer, with every string filtered like chat output (PII and secrets)."""
    if isinstance(value, str):
        text, kinds = _filter_text(value, mode)
        hits.extend(kinds)
        return text
    if isinstance(value, list):
        return [_filter_json(v, mode, hits) for v in value]
    if isinstance(value, dict):
        return {k: _filter_json(v, mode, hits) for k, v in value.items()}
    return value


def _guard_completion(guardrail: Any, body: dict[str, Any]) -> list[str]:
    """Model output the guardrail blocks is withheld, as OpenAI does: empty content, finish_reason content_filter."""
    hits: list[str] = []
    for choice in body.get("choices") or []:
        msg = choice.get("message") or {}
        if isinstance(msg.get("content"), str) and msg["content"]:
            blocked, _ = guardrail.check([msg["content"]], source="OUTPUT")
            if blocked:
                msg["content"] = ""
                choice["finish_reason"] = "content_filter"
                hits.append("bedrock_guardrail")
    return hits


def _usage(u: Any) -> InvokerUsage:
    return InvokerUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, estimated=u.estimated)


def _filter_text(text: str, mode: str) -> tuple[str, tuple[str, ...]]:
    if mode == "off":
        return text, ()
    from bulwark.guardrails.apply import filter_output_text

    return filter_output_text(text, mode)


def _filter_completion(body: dict[str, Any], mode: str) -> list[str]:
    hits: list[str] = []
    for choice in body.get("choices") or []:
        msg = choice.get("message") or {}
        if isinstance(msg.get("content"), str):
            msg["content"], kinds = _filter_text(msg["content"], mode)
            hits.extend(kinds)
    return hits


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
