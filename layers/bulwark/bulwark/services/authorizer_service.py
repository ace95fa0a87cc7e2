"""The authorizer function's service: event in, API Gateway authorizer response out."""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from bulwark.api.events import AuthorizerRequestEvent
from bulwark.auth.decision import Authorizer, JwtVerifierLike, Unauthorized
from bulwark.auth.pepper import Pepper
from bulwark.aws import clients as aws
from bulwark.errors import ServiceUnavailable
from bulwark.observability.metrics import count
from bulwark.policy import current_policy
from bulwark.settings import Settings, settings
from bulwark.store.counters_table import CountersTable
from bulwark.store.keys_table import KeysTable


class AuthorizerService:
    def __init__(self, authorizer: Authorizer, logger: Logger, metrics: Metrics) -> None:
        self.authorizer = authorizer
        self._log = logger
        self._metrics = metrics

    def handle(self, raw_event: dict[str, Any]) -> dict[str, Any]:
        try:
            event = AuthorizerRequestEvent.model_validate(raw_event)
        except ValidationError:
            self._fail("malformed_event", None)
        ip = event.requestContext.identity.sourceIp
        try:
            decision = self.authorizer.authorize(event)
        except Unauthorized as exc:
            self._fail(exc.reason, ip, exc.key_id)
        except ServiceUnavailable as exc:
            # The key store, the hashing secret or an issuer's JWKS is unreachable: fail closed by failing. API Gateway
            # then answers 503 through the AUTHORIZER_FAILURE gateway response (Retry-After, contract shape).
            self._log.error("authorizer dependency unavailable", extra={"reason": exc.code, "source_ip": ip})
            count(self._metrics, "AuthorizerDependencyFailure", dependency=exc.code)  # the alarm watches [service]
            self._audit(503, exc.code, ip, exc.code)  # the request never reaches the validator: audited here
            raise RuntimeError("authorizer dependency unavailable") from None
        context = decision.context
        if context.refusal:
            self._log.info(
                "refused",
                extra={
                    "decision": "deny" if decision.effect == "Deny" else "refuse",
                    "reason": decision.reason,
                    "principal": decision.principal_id,
                    "source_ip": ip,
                },
            )
            count(self._metrics, "AuthRefusals", reason=decision.reason)
            if decision.effect == "Deny":  # answered by API Gateway (403), never by the validator: audited here
                self._audit(403, context.refusal, ip, decision.reason)
        else:
            self._log.info(  # one line per event in every function, with the request id as correlation id
                "allowed",
                extra={"decision": "allow", "principal": decision.principal_id, "role": context.role, "source_ip": ip},
            )
        if context.risk_action != "allow":
            self._log.warning(
                "risk raised",
                extra={
                    "principal": decision.principal_id,
                    "risk_score": context.risk_score,
                    "risk_action": context.risk_action,
                    "risk_reasons": context.risk_reasons,
                    "source_ip": ip,
                },
            )
            count(self._metrics, "RiskActions", action=context.risk_action)
        return decision.to_response()

    def _fail(self, reason: str, ip: str | None, key_id: str = "") -> Any:
        outcome = self.authorizer.record_failure(ip, key_id)
        if reason == "canary_key":
            self._log.critical("canary key presented", extra={"alert": "canary_key_used", "source_ip": ip})
            self._metrics.add_metric(name="CanaryKeyUsed", unit=MetricUnit.Count, value=1)
        if outcome.key_id_flagged:
            # Wrong secrets for one key id from anywhere: someone is guessing it. Its valid secret still works.
            self._log.warning("key id under attack", extra={"alert": "key_failures", "key_id": key_id})
            self._metrics.add_metric(name="KeyFailureThreshold", unit=MetricUnit.Count, value=1)
        self._log.warning(
            "authentication failed",
            extra={"decision": "deny", "reason": reason, "source_ip": ip, "ip_blocked": outcome.ip_blocked},
        )
        count(self._metrics, "AuthFailures", reason=reason)
        self._audit(401, "invalid_credentials", ip, reason)  # a 401 never reaches the validator: audited here
        raise Unauthorized(reason)

    def _audit(self, status: int, code: str, ip: str | None, reason: str) -> None:
        """The audit record of a request the authorizer answers itself (API Gateway's 401, 403 or 503)."""
        from bulwark.observability.audit import emit_audit  # only refusals are audited here: not imported at cold start

        record = {"status": status, "code": code, "source_ip": ip or "", "verdicts": {"auth": reason}}
        emit_audit(self._log, record)


_jwt_lock = threading.Lock()
_jwt_verifier: list[tuple[object, JwtVerifierLike]] = []  # (the issuers it was built for, the verifier)


def _jwt() -> JwtVerifierLike | None:
    """The JWT verifier is built on first use: API-key-only deployments never import the crypto stack. A new policy
    (pushed or edited) with other issuers gets a new verifier; the same policy object keeps the one it has."""
    issuers = current_policy().issuers
    if not issuers:
        return None
    with _jwt_lock:
        if not _jwt_verifier or _jwt_verifier[0][0] is not issuers:
            from bulwark.auth.jwks import JwksCache
            from bulwark.auth.jwt_verify import JwtVerifier

            _jwt_verifier[:] = [(issuers, JwtVerifier(issuers, JwksCache()))]
        return _jwt_verifier[0][1]


def build(logger: Logger, metrics: Metrics, cfg: Settings | None = None) -> AuthorizerService:
    cfg = cfg or settings()
    ddb = aws.dynamodb()
    authorizer = Authorizer(
        policy=current_policy,
        keys=KeysTable(ddb, cfg.keys_table),
        counters=CountersTable(ddb, cfg.counters_table),
        pepper=Pepper(cfg, aws.secretsmanager),
        jwt=_jwt,
    )
    return AuthorizerService(authorizer, logger, metrics)
