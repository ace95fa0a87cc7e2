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
from bulwark.errors import BulwarkError
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
            self._fail(exc.reason, ip)
        except BulwarkError as exc:
            # Store or secret unavailable: fail closed. Raising makes API Gateway answer AUTHORIZER_FAILURE.
            self._log.error("authorizer dependency unavailable", extra={"reason": exc.code})
            self._metrics.add_metric(name="AuthorizerDependencyFailure", unit=MetricUnit.Count, value=1)
            raise RuntimeError("authorizer dependency unavailable") from None
        if decision.context.get("refusal"):
            self._log.info(
                "refused",
                extra={
                    "decision": "refuse",
                    "reason": decision.reason,
                    "principal": decision.principal_id,
                    "source_ip": ip,
                },
            )
            count(self._metrics, "AuthRefusals", reason=decision.reason)
        else:
            self._log.info(  # one line per event in every function, with the request id as correlation id
                "allowed",
                extra={
                    "decision": "allow",
                    "principal": decision.principal_id,
                    "role": decision.context.get("role"),
                    "source_ip": ip,
                },
            )
        if decision.context.get("risk_action", "allow") != "allow":
            self._log.warning(
                "risk raised",
                extra={
                    "principal": decision.principal_id,
                    "risk_score": decision.context.get("risk_score"),
                    "risk_action": decision.context.get("risk_action"),
                    "risk_reasons": decision.context.get("risk_reasons"),
                    "source_ip": ip,
                },
            )
            count(self._metrics, "RiskActions", action=decision.context.get("risk_action", ""))
        return decision.to_response()

    def _fail(self, reason: str, ip: str | None) -> Any:
        blocked = self.authorizer.record_failure(ip) if ip else False
        if reason == "canary_key":
            self._log.critical("canary key presented", extra={"alert": "canary_key_used", "source_ip": ip})
            self._metrics.add_metric(name="CanaryKeyUsed", unit=MetricUnit.Count, value=1)
        self._log.warning(
            "authentication failed",
            extra={"decision": "deny", "reason": reason, "source_ip": ip, "ip_blocked": blocked},
        )
        count(self._metrics, "AuthFailures", reason=reason)
        from bulwark.observability.audit import emit_audit  # only refusals are audited here: not imported at cold start

        audit = {"status": 401, "code": "invalid_credentials", "source_ip": ip or "", "verdicts": {"auth": reason}}
        emit_audit(self._log, audit)  # a 401 never reaches the validator: its audit record is written here
        raise Unauthorized(reason)


_jwt_lock = threading.Lock()
_jwt_verifier: list[JwtVerifierLike | None] = []


def _jwt() -> JwtVerifierLike | None:
    """The JWT verifier is built on first use: API-key-only deployments never import the crypto stack."""
    with _jwt_lock:
        if not _jwt_verifier:
            policy = current_policy()
            if not policy.issuers:
                return None
            from bulwark.auth.jwks import JwksCache
            from bulwark.auth.jwt_verify import JwtVerifier

            _jwt_verifier.append(JwtVerifier(policy.issuers, JwksCache()))
        return _jwt_verifier[0]


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
