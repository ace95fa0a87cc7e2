"""How long a signed validator -> invoker request may live: 60 s buffered, 15 minutes for a streamed call.

Signed and verified with the local stack's KMS stand-in (the HMAC KMS computes), the replay claim in memory.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import pytest

from bulwark.auth.invoker_trust import MAX_LIFETIME_MS, STREAM_MAX_LIFETIME_MS, MacSigner, MacVerifier, TrustRefused
from bulwark.aws.wire import AwsServiceError
from bulwark.services.invoker_client import InvokerRequest
from bulwark.services.validator_service import DEADLINE_SECONDS, STREAM_DEADLINE_SECONDS
from bulwark_dev.local.aws_endpoint import KmsStandIn
from bulwark_dev.local.iam_policy import Policy
from bulwark_dev.local.iam_roles import KmsKey

KEY = KmsKey(
    logical_id="InvokerMacKey",
    arn="arn:aws:kms:us-east-1:000000000000:key/local-mac",
    key_id="local-mac",
    key_spec="HMAC_256",
    key_usage="GENERATE_VERIFY_MAC",
    policy=Policy(),
)


class StandInKms:
    """The KMS client's two calls, answered by the stand-in (an error answer raised as the wire client raises it)."""

    def __init__(self) -> None:
        self._kms = KmsStandIn(None)

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        status, answer = self._kms.call(operation, params, KEY)
        if status != 200:
            raise AwsServiceError(str(answer["__type"]), str(answer.get("message", "")), status, answer)
        return answer

    def generate_mac(self, **params: Any) -> dict[str, Any]:
        return self._call("GenerateMac", params)

    def verify_mac(self, **params: Any) -> dict[str, Any]:
        return self._call("VerifyMac", params)


def _request(transport: Literal["buffered", "stream"], lives_seconds: float) -> InvokerRequest:
    return InvokerRequest(
        request_id=str(uuid.uuid4()),
        principal="key:k1",
        role="developer",
        model="demo-echo",
        route="chat",
        payload='{"model":"demo-echo","messages":[{"role":"user","content":"hi"}],"stream":true}',
        stream=transport == "stream",
        transport=transport,
        deadline_epoch_ms=int((time.time() + lives_seconds) * 1000),
    )


@pytest.fixture
def pair() -> tuple[MacSigner, MacVerifier]:
    kms = StandInKms()
    claimed: set[str] = set()

    def claim_once(token: str, _expires: int) -> bool:
        first = token not in claimed
        claimed.add(token)
        return first

    return MacSigner(lambda: kms, KEY.arn), MacVerifier(lambda: kms, KEY.arn, claim_once)


def test_the_validators_deadlines_fit_the_lifetimes() -> None:
    assert DEADLINE_SECONDS * 1000 <= MAX_LIFETIME_MS
    assert STREAM_DEADLINE_SECONDS * 1000 <= STREAM_MAX_LIFETIME_MS


def test_a_streamed_call_with_the_stream_deadline_is_served_once(pair: tuple[MacSigner, MacVerifier]) -> None:
    sign, trust = pair
    request = sign.sign(_request("stream", STREAM_DEADLINE_SECONDS))
    trust.verify(request)
    with pytest.raises(TrustRefused) as replayed:
        trust.verify(request)
    assert replayed.value.reason == "replayed"


def test_a_buffered_call_may_not_claim_the_stream_lifetime(pair: tuple[MacSigner, MacVerifier]) -> None:
    sign, trust = pair
    with pytest.raises(TrustRefused) as refused:
        trust.verify(sign.sign(_request("buffered", STREAM_DEADLINE_SECONDS)))
    assert refused.value.reason == "deadline_too_far"


def test_a_streamed_call_beyond_fifteen_minutes_is_refused(pair: tuple[MacSigner, MacVerifier]) -> None:
    sign, trust = pair
    with pytest.raises(TrustRefused) as refused:
        trust.verify(sign.sign(_request("stream", STREAM_MAX_LIFETIME_MS / 1000 + 30)))
    assert refused.value.reason == "deadline_too_far"


def test_the_transport_cannot_be_switched_after_signing(pair: tuple[MacSigner, MacVerifier]) -> None:
    """A signed buffered request turned into a stream (to claim the longer lifetime) no longer verifies."""
    sign, trust = pair
    signed = sign.sign(_request("buffered", 20))
    with pytest.raises(TrustRefused) as refused:
        trust.verify(signed.model_copy(update={"transport": "stream", "stream": True}))
    assert refused.value.reason == "bad_mac"
