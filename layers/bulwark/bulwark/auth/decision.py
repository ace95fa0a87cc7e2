"""The authorizer's decision: who is calling, and which routes they may use.

Outcomes (see docs/SECURITY.md):
- a source address outside the policy's network allow/deny lists → an explicit Deny (API Gateway answers 403
  through the ACCESS_DENIED gateway response, code `ip_not_allowed`), before any credential is looked at.
- unknown / malformed / wrong credential → `Unauthorized` (API Gateway answers 401 invalid_credentials): one answer
  for all of them, so there is no oracle; the failure is counted against the source IP and, for a wrong secret of a
  known key id, against that key id.
- the key store, the hashing secret or an issuer's JWKS is unreachable → the authorizer raises (`ServiceUnavailable`):
  API Gateway answers 503 through the AUTHORIZER_FAILURE gateway response. Never an Allow.
- a caller who authenticated but must still be refused (expired or revoked key, source IP not allowed for the key,
  route not allowed, a source address in its failed-attempt cool-down, risk policy) → an Allow for *this one method
  ARN only*, with a typed refusal in the context (`CallerContext.refused`). The validator renders it (before reading
  the body) with the contract's exact status and code, which API Gateway cannot do from an authorizer.
- an allowed caller → an Allow naming only the method ARNs the role may use (invoke: only its models), so a decision
  can never open another route; context: principal, key id or subject, tenant, role. Never the credential.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bulwark.api.events import AuthorizerRequestEvent
from bulwark.api.routes import ROUTE_METHODS, route_of
from bulwark.auth import keys as keyfmt
from bulwark.auth.context import CallerContext
from bulwark.auth.pepper import PepperUnavailable
from bulwark.auth.risk import RiskDecision, RiskSignals, assess
from bulwark.auth.risk_memory import RiskMemory, network_of
from bulwark.auth.usage_plan import usage_identifier
from bulwark.errors import (
    AuthenticationError,
    BulwarkError,
    CredentialNotAllowed,
    ExpiredCredentials,
    IpNotAllowed,
    RevokedCredentials,
    RoleNotAllowed,
    RouteNotAllowed,
    StoreUnavailable,
    TooManyFailedAttempts,
)
from bulwark.policy import NetworkPolicy, Policy, RoleConfig
from bulwark.store.keys_table import KeyRecord

CACHE_SECONDS = 10.0  # in-memory decision cache; with API Gateway's cache (<= 50 s) revocation lands within 60 s
_CREDENTIAL_QUERY_NAMES = {
    "api_key",
    "apikey",
    "api-key",
    "key",
    "access_token",
    "token",
    "x-api-key",
    "authorization",
    "bearer",
    "jwt",
    "id_token",
}


class Unauthorized(Exception):
    """API Gateway's contract: raising exactly 'Unauthorized' makes it answer 401."""

    def __init__(self, reason: str, *, key_id: str = "") -> None:
        super().__init__("Unauthorized")
        self.reason = reason  # for logs and metrics only; never shown to the client
        self.key_id = key_id  # set for a wrong secret of a known key id: the failure counts against that id too


class VerifiedToken(Protocol):
    @property
    def issuer(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def roles(self) -> tuple[str, ...]: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def expires_at(self) -> int: ...


class JwtVerifierLike(Protocol):
    def looks_like_jwt(self, credential: str) -> bool: ...

    def verify(self, token: str) -> VerifiedToken: ...


class KeyStore(Protocol):
    """The authorizer's reads and writes of the keys table (bulwark.store.keys_table.KeysTable)."""

    def get_with(
        self, key_id: str, table: str, key: dict[str, Any]
    ) -> tuple[KeyRecord | None, dict[str, Any] | None]: ...

    def touch_last_used(
        self, key_id: str, now: int, min_interval: int = 300, networks: tuple[str, ...] | None = None
    ) -> None: ...


class FailureStore(Protocol):
    """The authorizer's failed-attempt counters (bulwark.store.counters_table.CountersTable)."""

    def failure_key(self, ip: str) -> tuple[str, dict[str, Any]]: ...

    def blocked_until_ms(self, item: dict[str, Any] | None) -> int: ...

    def record_failure(
        self, ip: str, threshold: int, window_s: int, cooldown_s: int, now_ms: int | None = None
    ) -> int: ...

    def record_key_failure(
        self, key_id: str, threshold: int, window_s: int, cooldown_s: int, now_ms: int | None = None
    ) -> int: ...


class PepperSource(Protocol):
    """The key-hashing secret by version (bulwark.auth.pepper.Pepper)."""

    def version(self, version: int) -> bytes | None: ...


@dataclass(frozen=True)
class FailureOutcome:
    """What one counted failure changed: the source address entered its cool-down, the key id crossed its threshold."""

    ip_blocked: bool = False
    key_id_flagged: bool = False


@dataclass(frozen=True)
class Caller:
    principal: str
    kind: str  # "api_key" | "jwt"
    role: str
    key_id: str = ""
    subject: str = ""
    tenant: str = ""
    expires_at: int | None = None
    allow_cidrs: tuple[str, ...] = ()
    limit_overrides: dict[str, int] = field(default_factory=dict)
    canary: bool = False
    networks: tuple[str, ...] = ()
    last_used_at: int | None = None


@dataclass
class Decision:
    principal_id: str
    arns: list[str]
    context: CallerContext
    reason: str = "allowed"
    effect: Literal["Allow", "Deny"] = "Allow"

    def to_response(self) -> dict[str, Any]:
        response: dict[str, Any] = {
            "principalId": self.principal_id,
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": self.effect, "Resource": self.arns}],
            },
            "context": self.context.to_context(),
        }
        if self.effect == "Allow":
            # Meters the caller against an API Gateway usage plan, when the stack has one (bulwark.auth.usage_plan).
            response["usageIdentifierKey"] = usage_identifier(self.principal_id)
        return response


class MethodArn:
    """arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path}"""

    def __init__(self, arn: str) -> None:
        head, _, rest = arn.partition("/")
        parts = rest.split("/", 2)
        if not head.startswith("arn:aws") or len(parts) < 2:
            raise ValueError("malformed method ARN")
        self.base = f"{head}/{parts[0]}"
        self.full = arn

    def for_route(self, method: str, path: str) -> str:
        return f"{self.base}/{method}/{path}"


class Authorizer:
    def __init__(
        self,
        *,
        policy: Callable[[], Policy],
        keys: KeyStore,
        counters: FailureStore,
        pepper: PepperSource,
        jwt: Callable[[], JwtVerifierLike | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._keys = keys
        self._counters = counters
        self._pepper = pepper
        self._jwt = jwt
        self._clock = clock
        self._cache: dict[str, tuple[float, Caller | BaseException]] = {}
        self._blocked_ips: dict[str, float] = {}
        self._last_touch: dict[str, float] = {}
        self._seen_networks: dict[str, set[str]] = {}
        self._memory = RiskMemory()
        self._lock = threading.Lock()
        self.store_reads = 0  # for benchmarks: reads of the keys table by this instance

    # ------------------------------------------------------------------ entry point
    def authorize(self, event: AuthorizerRequestEvent) -> Decision:
        policy = self._policy()
        now = self._clock()
        ip = event.requestContext.identity.sourceIp
        arn = MethodArn(event.methodArn)
        route = route_of(event.httpMethod or event.requestContext.httpMethod, event.resource)

        if not _network_admits(policy.network, ip):
            # No identity is needed to refuse an address the operator listed: an explicit Deny, never an Allow.
            refused = CallerContext.refused(f"ip:{ip}", IpNotAllowed())
            return Decision(f"ip:{ip}", [arn.full], refused, reason="ip_not_allowed", effect="Deny")

        credential = self._credential(event)
        # Raises Unauthorized (401) for a credential that does not verify, and ServiceUnavailable when the key store,
        # the hashing secret or an issuer's JWKS is unreachable (the handler lets it fail: 503 AUTHORIZER_FAILURE).
        caller, store_blocked_until = self._identify(credential, now, policy, ip)
        principal = caller.principal if isinstance(caller, Caller) else f"key:{credential_id(credential)}"
        # The credential verified, so only now may the source address's cool-down refuse it: the answer is then the
        # contract's 429 for a caller who authenticated, never an Allow for one who did not.
        blocked_until = self._cooldown_until(policy.network, ip, now, store_blocked_until)
        if blocked_until > now:
            return self._refuse(arn, principal, TooManyFailedAttempts(retry_after=int(blocked_until - now) + 1))
        if isinstance(caller, BulwarkError):  # verified key that is expired or revoked
            return self._refuse(arn, principal, caller)
        if caller.allow_cidrs and not _ip_in(ip, caller.allow_cidrs):
            return self._refuse(arn, principal, IpNotAllowed())
        role = policy.role(caller.role)
        if role is None:
            return self._refuse(arn, principal, RoleNotAllowed())
        if route is None or route not in role.routes:
            return self._refuse(arn, principal, RouteNotAllowed())
        risk, new_net = self._assess_risk(caller, role, ip, now)
        if caller.kind == "api_key":
            self._touch(caller, now, new_net)
        if risk.action == "refuse_api_key":
            return self._refuse(arn, principal, CredentialNotAllowed(), **_risk_fields(risk))
        context = self._context(caller, **_risk_fields(risk))
        return Decision(caller.principal, self._allowed_arns(arn, role, policy), context)

    def _assess_risk(self, caller: Caller, role: RoleConfig, ip: str, now: float) -> tuple[RiskDecision, str | None]:
        """Risk on every request (not only at sign-in): new network, failures from the IP, volume, dormancy."""
        net = network_of(ip)
        with self._lock:
            known = set(caller.networks) | self._seen_networks.get(caller.principal, set())
        # A key with no history yet is not "from a new network"; its first network is remembered all the same.
        unseen = net not in known
        new_net = net if unseen else None
        per_minute, ratio = self._memory.count_request(caller.principal, now)
        window = self._policy().network.failed_auth.window_seconds
        signals = RiskSignals(
            credential_kind="api_key" if caller.kind == "api_key" else "jwt",
            new_network=bool(known) and unseen,
            recent_failures_from_ip=self._memory.failures(ip, now, window),
            volume_ratio=ratio,
            requests_this_minute=per_minute,
            days_since_last_use=(now - caller.last_used_at) / 86_400 if caller.last_used_at else None,
        )
        return assess(signals, role.risk), new_net

    # ------------------------------------------------------------------ steps
    def _cooldown_until(self, net: NetworkPolicy, ip: str, now: float, from_store: float) -> float:
        """End of the source address's failed-attempt cool-down (epoch s), 0 when none; trusted CIDRs have none.

        What this container counted itself, or read from the store with the key (any container's count)."""
        if net.failed_auth.trusted_cidrs and _ip_in(ip, net.failed_auth.trusted_cidrs):
            return 0.0
        with self._lock:
            if from_store > now:
                self._blocked_ips[ip] = max(from_store, self._blocked_ips.get(ip, 0.0))
            return self._blocked_ips.get(ip, 0.0)

    def _credential(self, event: AuthorizerRequestEvent) -> str:
        query = (event.multiValueQueryStringParameters or {}) | {
            k: [v] for k, v in (event.queryStringParameters or {}).items()
        }
        for name, values in query.items():
            # By name, or by shape under any name: a key or token in a URL ends up in access logs and histories.
            if name.lower() in _CREDENTIAL_QUERY_NAMES or any(
                v.startswith((keyfmt.PREFIX, "eyJ")) for v in values if isinstance(v, str)
            ):
                raise Unauthorized("credential_in_query_string")
        auth = event.header_values("authorization")
        xkey = event.header_values("x-api-key")
        if len(auth) > 1 or len(xkey) > 1:
            raise Unauthorized("duplicate_credential_headers")
        bearer: str | None = None
        if auth:
            scheme, _, value = auth[0].strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("malformed_authorization_header")
            bearer = value.strip()
        api_key = xkey[0].strip() if xkey else None
        if bearer and api_key and bearer != api_key:
            raise Unauthorized("two_different_credentials")
        credential = bearer or api_key
        if not credential:
            raise Unauthorized("missing_credential")
        if len(credential) > 16_384:
            raise Unauthorized("oversized_credential")
        return credential

    def _identify(self, credential: str, now: float, policy: Policy, ip: str) -> tuple[Caller | BulwarkError, float]:
        """The verified caller (or the expired/revoked error of a verified key) and the source address's cool-down
        end as the store has it (0 when not read: a cached identity costs no store read)."""
        cache_key = hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit and hit[0] > now:
            cached = hit[1]
            if isinstance(cached, Caller):
                if cached.expires_at is not None and now >= cached.expires_at:
                    return ExpiredCredentials(), 0.0
                return cached, 0.0
            if isinstance(cached, BulwarkError):
                return cached, 0.0
        blocked_until = 0.0
        if keyfmt.looks_like_api_key(credential):
            result, blocked_until = self._identify_api_key(credential, now, ip)
        else:
            result = self._identify_jwt(credential, policy)
        with self._lock:
            if len(self._cache) > 50_000:
                self._cache.clear()
            expiry = now + CACHE_SECONDS
            if isinstance(result, Caller) and result.expires_at is not None:
                expiry = min(expiry, float(result.expires_at))
            self._cache[cache_key] = (expiry, result)
        return result, blocked_until

    def _identify_api_key(self, credential: str, now: float, ip: str) -> tuple[Caller | BulwarkError, float]:
        parsed = keyfmt.parse_api_key(credential)
        if parsed is None:
            raise Unauthorized("malformed_api_key")  # checksum or shape: the store is never touched
        self.store_reads += 1
        # One read for both the key and the source address's failure record, so an address in its cool-down is
        # refused by every container, not only by those that counted its failures.
        table, fail_key = self._counters.failure_key(ip)
        record, failures = self._keys.get_with(parsed.key_id, table, fail_key)
        blocked_until = self._counters.blocked_until_ms(failures) / 1000
        if record is None:
            raise Unauthorized("unknown_key")
        valid = [h for h in record.hashes if h.not_after is None or h.not_after > now]
        # Check every live hash (at most 3) so timing does not reveal which one matched. Each hash names the pepper
        # version it was made with, so the pepper can rotate without invalidating issued keys.
        matched = False
        for h in valid:
            try:
                pepper = self._pepper.version(h.pepper_version)
            except PepperUnavailable as exc:
                raise StoreUnavailable() from exc
            if pepper is not None:
                matched |= keyfmt.matches(pepper, parsed, h.hash)
        if not matched:
            raise Unauthorized("wrong_secret", key_id=parsed.key_id)
        if record.canary:
            raise Unauthorized("canary_key")
        if record.status == "revoked":
            return RevokedCredentials(), blocked_until
        if record.status == "disabled" or record.is_expired(now):
            return ExpiredCredentials(), blocked_until
        return _caller_from_record(record), blocked_until

    def _identify_jwt(self, credential: str, policy: Policy) -> Caller:
        verifier = self._jwt() if self._jwt else None
        if verifier is None or not policy.issuers or not verifier.looks_like_jwt(credential):
            raise Unauthorized("unknown_credential_type")
        try:
            token = verifier.verify(credential)
        except AuthenticationError as exc:
            raise Unauthorized(str(getattr(exc, "reason", "invalid_jwt"))) from exc
        roles = [r for r in token.roles if r in policy.roles]
        if not roles:
            raise Unauthorized("jwt_without_role")
        return Caller(
            principal=f"jwt:{token.issuer}:{token.subject}",
            kind="jwt",
            role=roles[0],
            subject=token.subject,
            tenant=token.tenant or "",
            expires_at=int(token.expires_at),
        )

    def _touch(self, caller: Caller, now: float, new_network: str | None) -> None:
        """Last-used time (and networks), written sparingly: at most every 5 minutes per key per container, or
        once when a new network appears. Never fatal for the request."""
        networks: tuple[str, ...] | None = None
        with self._lock:
            seen = self._seen_networks.setdefault(caller.principal, set(caller.networks))
            if new_network is not None and new_network not in seen:
                seen.add(new_network)
                networks = tuple(sorted(seen))[-8:]
            elif now - self._last_touch.get(caller.key_id, 0.0) < 300:
                return
            self._last_touch[caller.key_id] = now
        try:
            self._keys.touch_last_used(caller.key_id, int(now), networks=networks)
        except StoreUnavailable:
            return

    def _allowed_arns(self, arn: MethodArn, role: RoleConfig, policy: Policy) -> list[str]:
        arns: list[str] = []
        for route in role.routes:
            method, path = ROUTE_METHODS[route]
            if route == "invoke":
                if "*" in role.models:
                    arns.append(arn.for_route(method, path.replace("{model}", "*")))
                else:
                    arns.extend(arn.for_route(method, path.replace("{model}", m)) for m in policy.models_for(role))
            else:
                arns.append(arn.for_route(method, path))
        return arns or [arn.for_route("GET", "v1/models")]

    @staticmethod
    def _context(caller: Caller, **risk: Any) -> CallerContext:
        return CallerContext(
            principal=caller.principal,
            kind=caller.kind,
            key_id=caller.key_id,
            subject=caller.subject,
            tenant=caller.tenant,
            role=caller.role,
            expires_at=caller.expires_at,
            limit_overrides=caller.limit_overrides,
            **risk,
        )

    @staticmethod
    def _refuse(arn: MethodArn, principal: str, error: BulwarkError, **risk: Any) -> Decision:
        """An Allow for this one method ARN carrying a typed refusal: only ever for a caller who authenticated."""
        return Decision(principal, [arn.full], CallerContext.refused(principal, error, **risk), reason=error.code)

    # ------------------------------------------------------------------ failures
    def record_failure(self, ip: str | None, key_id: str = "") -> FailureOutcome:
        """Count a failed attempt against the source address (unless trusted) and, for a wrong secret of a known
        key id, against that key id. The key id's count never refuses its valid secret (a lockout aimed at a key's
        owner would be a denial of service anyone could cause); crossing it is reported, for the alarm."""
        policy = self._policy().network.failed_auth
        now = self._clock()
        ip_blocked = key_flagged = False
        if ip and not (policy.trusted_cidrs and _ip_in(ip, policy.trusted_cidrs)):
            self._memory.record_failure(ip, now)
            try:
                until_ms = self._counters.record_failure(
                    ip, policy.threshold, policy.window_seconds, policy.cooldown_seconds, int(now * 1000)
                )
            except StoreUnavailable:
                until_ms = 0
            if until_ms:
                with self._lock:
                    self._blocked_ips[ip] = until_ms / 1000
                ip_blocked = True
        if key_id:
            try:
                key_flagged = bool(
                    self._counters.record_key_failure(
                        key_id,
                        policy.key_threshold,
                        policy.window_seconds,
                        policy.cooldown_seconds,
                        int(now * 1000),
                    )
                )
            except StoreUnavailable:
                key_flagged = False
        return FailureOutcome(ip_blocked, key_flagged)


def _caller_from_record(record: KeyRecord) -> Caller:
    overrides = {k: v for k, v in record.limits.model_dump().items() if v is not None}
    return Caller(
        principal=f"key:{record.key_id}",
        kind="api_key",
        role=record.role,
        key_id=record.key_id,
        tenant=record.tenant or "",
        expires_at=record.expires_at,
        allow_cidrs=record.allow_cidrs,
        limit_overrides=overrides,
        canary=record.canary,
        networks=record.networks,
        last_used_at=record.last_used_at,
    )


def _risk_fields(risk: RiskDecision) -> dict[str, Any]:
    return {"risk_score": risk.score, "risk_action": risk.action, "risk_reasons": ",".join(risk.reasons)}


def _network_admits(net: NetworkPolicy, ip: str) -> bool:
    if net.deny_cidrs and _ip_in(ip, net.deny_cidrs):
        return False
    return not (net.allow_cidrs and not _ip_in(ip, net.allow_cidrs))


def credential_id(credential: str) -> str:
    parsed = keyfmt.parse_api_key(credential)
    return parsed.key_id if parsed else "unknown"


def _ip_in(ip: str, cidrs: tuple[str, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)
