"""Only the validator can get a model called: its requests to the invoker carry a KMS HMAC.

``lambda:InvokeFunction`` on the invoker is not enough to call a model: a principal that has it (a leaked role, a
console user) can send any payload, so the invoker trusts only a request whose MAC verifies under a KMS HMAC key that
only the validator's role may ``kms:GenerateMac`` with and only the invoker's role may ``kms:VerifyMac`` with (the
key policy in template.yaml; the key never leaves KMS). The MAC covers every field of the request (request id,
caller, role, model, route, the canonical payload, the deadline ...), so nothing can be swapped; the deadline bounds
its life, and the request id is claimed once (a conditional put), so a captured request cannot be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bulwark.aws.wire import AwsError, AwsServiceError
from bulwark.errors import ServiceUnavailable
from bulwark.services.invoker_client import InvokerRequest

MAC_ALGORITHM = "HMAC_SHA_256"
_DOMAIN = b"bulwark/validator->invoker/v1\n"  # the MAC means this and nothing else
# A validator request lives until its deadline (DEADLINE_SECONDS after it was made); one that claims to live longer
# than this was not made by the validator.
MAX_LIFETIME_MS = 60_000
# A streamed call (transport "stream", which the MAC covers) lives until the validator's STREAM_DEADLINE_SECONDS
# (14 minutes; API Gateway ends a streamed response at 15): it may claim up to this.
STREAM_MAX_LIFETIME_MS = 15 * 60_000
_REMEMBERED = 50_000  # request ids this container remembers (each lives at most STREAM_MAX_LIFETIME_MS)


class TrustRefused(Exception):
    """The request is not the validator's: ``reason`` says why (for the audit record and the metric)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrustUnavailable(ServiceUnavailable):
    """KMS could not answer: the request cannot be signed or trusted now (fail closed, 503 with Retry-After)."""

    default_code = "service_unavailable"
    default_message = "The model call could not be authorized right now. Retry later."


def mac_message(request: InvokerRequest) -> bytes:
    """What the MAC covers: every field but the MAC, canonical JSON, hashed (KMS takes at most 4096 bytes)."""
    fields = request.model_dump(mode="json", exclude={"mac"})
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _DOMAIN + hashlib.sha256(canonical).digest()


class MacSigner:
    """The validator's side: one ``kms:GenerateMac`` per request."""

    def __init__(self, kms: Callable[[], Any], key_id: str) -> None:
        self._kms = kms  # the lean KMS client, made at first use
        self._key_id = key_id

    def sign(self, request: InvokerRequest) -> InvokerRequest:
        message = base64.b64encode(mac_message(request)).decode("ascii")
        try:
            answer = self._kms().generate_mac(KeyId=self._key_id, Message=message, MacAlgorithm=MAC_ALGORITHM)
        except AwsError as exc:
            raise TrustUnavailable() from exc
        return request.model_copy(update={"mac": str(answer["Mac"])})


class MacVerifier:
    """The invoker's side: deadline, ``kms:VerifyMac``, then the request id claimed once."""

    def __init__(
        self,
        kms: Callable[[], Any],
        key_id: str,
        claim_once: Callable[[str, int], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kms = kms
        self._key_id = key_id
        self._claim_once = claim_once
        self._clock = clock
        # Every token this container has served, until its deadline: a replay to the same container is refused even
        # while the store is down. The store's claim is what covers the other containers.
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._seen_lock = threading.Lock()
        self.degraded = 0  # requests served while the store could not record the claim (see verify)

    def verify(self, request: InvokerRequest) -> None:
        if not request.mac:
            raise TrustRefused("missing_mac")
        now_ms = int(self._clock() * 1000)
        if request.deadline_epoch_ms < now_ms:
            raise TrustRefused("expired")
        lifetime = STREAM_MAX_LIFETIME_MS if request.transport == "stream" else MAX_LIFETIME_MS
        if request.deadline_epoch_ms - now_ms > lifetime:
            raise TrustRefused("deadline_too_far")
        # Keyed on the MAC too, so no claim can take a real request's place. Claimed only once KMS has said the MAC
        # is the validator's: a forged request costs the store nothing (running both at once saved no measurable time
        # locally and wrote a claim for every forgery).
        token = f"mac:{request.request_id}:{request.mac}"
        try:
            answer = self._kms().verify_mac(
                KeyId=self._key_id,
                Message=base64.b64encode(mac_message(request)).decode("ascii"),
                Mac=request.mac,
                MacAlgorithm=MAC_ALGORITHM,
            )
        except AwsServiceError as exc:
            if exc.code in ("KMSInvalidMacException", "ValidationException"):
                raise TrustRefused("bad_mac") from None
            raise TrustUnavailable() from exc
        except AwsError as exc:
            raise TrustUnavailable() from exc
        if answer.get("MacValid") is not True:
            raise TrustRefused("bad_mac")
        if not self._remember(token, request.deadline_epoch_ms, now_ms):
            raise TrustRefused("replayed")
        try:
            first = self._claim_once(token, request.deadline_epoch_ms // 1000 + 60)
        except ServiceUnavailable:
            # The store is down. Only a request the validator admitted without the store reaches here (a role the
            # operator made fail_open): its MAC is verified and this container has not seen it, which is what can
            # be checked; the caller logs the degraded check.
            self.degraded += 1
            return
        if not first:
            raise TrustRefused("replayed")

    def _remember(self, token: str, deadline_ms: int, now_ms: int) -> bool:
        with self._seen_lock:
            while self._seen and (len(self._seen) >= _REMEMBERED or next(iter(self._seen.values())) < now_ms):
                self._seen.popitem(last=False)  # oldest first; each expires at its deadline
            if token in self._seen:
                return False
            self._seen[token] = deadline_ms
            return True
