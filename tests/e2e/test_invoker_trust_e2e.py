"""Only the validator can get a model called: the invoker, invoked directly in the local stack, serves only requests
the validator signed with the KMS HMAC key, once, before their deadline, for a role that may use the model.

"Directly" is the Lambda Invoke API of the local stack, as a principal with ``lambda:InvokeFunction`` on the invoker
would call it in AWS. A validly signed request is made with the validator role's own credentials (the only role the
key policy lets sign), which is what the validator does for every request.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from typing import Any

import pytest

from bulwark.auth.invoker_trust import MAC_ALGORITHM, mac_message
from bulwark.aws.sigv4 import Credentials, CredentialSource
from bulwark.aws.wire import AwsServiceError, Endpoint, KmsClient
from bulwark.services.invoker_client import InvokerRequest
from bulwark_dev.local.lambda_worker import INVOKE_PREFIX


def _kms_as(local_stack: Any, function: str) -> KmsClient:
    env = local_stack.stack.aws.credentials_for(function)
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return KmsClient(
        target_prefix="TrentService",
        json_version="1.1",
        service="kms",
        endpoint=Endpoint.parse(local_stack.stack.aws.url),
        region="us-east-1",
        credentials=CredentialSource(lambda: creds),
        connect_timeout=1.0,
        read_timeout=5.0,
        max_attempts=1,
    )


def _key(local_stack: Any) -> str:
    return str(local_stack.stack.template.functions["InvokerFunction"].environment["BULWARK_INVOKER_MAC_KEY"])


def _request(role: str = "developer", model: str = "demo-echo", deadline_s: float = 20.0) -> InvokerRequest:
    payload = {"model": model, "messages": [{"role": "user", "content": "hello from a direct call"}]}
    return InvokerRequest(
        request_id=str(uuid.uuid4()),
        principal="key:trust-e2e",
        role=role,
        model=model,
        route="chat",
        payload=json.dumps(payload, separators=(",", ":")),
        deadline_epoch_ms=int((time.time() + deadline_s) * 1000),
    )


def _signed(local_stack: Any, request: InvokerRequest) -> InvokerRequest:
    answer = _kms_as(local_stack, "ValidatorFunction").generate_mac(
        KeyId=_key(local_stack),
        Message=base64.b64encode(mac_message(request)).decode(),
        MacAlgorithm=MAC_ALGORITHM,
    )
    return request.model_copy(update={"mac": answer["Mac"]})


def _invoke_directly(local_stack: Any, body: dict[str, Any]) -> dict[str, Any]:
    name = local_stack.stack.template.functions["InvokerFunction"].name
    http = urllib.request.Request(
        f"{local_stack.stack.fleet.lambda_endpoint}{INVOKE_PREFIX}{name}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(http, timeout=30) as answer:
        result: dict[str, Any] = json.loads(answer.read())
    return result


def _refusal_audit(local_stack: Any, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in local_stack.log_lines:
            if request_id in line and "invoker_request_refused" in line:
                record: dict[str, Any] = json.loads(line.split("] ", 1)[1])["audit"]
                return record
        time.sleep(0.05)
    raise AssertionError(f"no audit record of the refusal of {request_id}")


def _forged_metric_seen(local_stack: Any, request_id: str) -> bool:
    deadline = time.monotonic() + 5  # the EMF document is flushed after the invocation's last log line
    while time.monotonic() < deadline:
        for line in local_stack.log_lines:
            if request_id in line and '"ForgedInvocations"' in line and '"_aws"' in line:
                document = json.loads(line.split("] ", 1)[1])
                return bool(document["service"] == "bulwark-invoker" and document["ForgedInvocations"])
        time.sleep(0.05)
    return False


def _assert_refused(local_stack: Any, answer: dict[str, Any], request_id: str, reason: str) -> None:
    assert answer["ok"] is False
    assert answer["error"]["error_class"] == "PermissionDenied"
    assert _refusal_audit(local_stack, request_id)["reason"] == reason
    assert _forged_metric_seen(local_stack, request_id)


def test_a_request_signed_by_the_validator_role_is_served_once(local_stack: Any) -> None:
    request = _signed(local_stack, _request())
    first = _invoke_directly(local_stack, request.model_dump())
    assert first["ok"] is True and "Echo" in first["body"]
    again = _invoke_directly(local_stack, request.model_dump())
    _assert_refused(local_stack, again, request.request_id, "replayed")


def test_an_unsigned_request_is_refused_audited_and_counted(local_stack: Any) -> None:
    request = _request()
    _assert_refused(local_stack, _invoke_directly(local_stack, request.model_dump()), request.request_id, "missing_mac")


def test_a_forged_mac_is_refused(local_stack: Any) -> None:
    request = _request().model_copy(update={"mac": base64.b64encode(b"\x00" * 32).decode()})
    _assert_refused(local_stack, _invoke_directly(local_stack, request.model_dump()), request.request_id, "bad_mac")


def test_a_signed_request_with_any_field_changed_is_refused(local_stack: Any) -> None:
    signed = _signed(local_stack, _request(role="partner"))
    swapped = signed.model_copy(update={"role": "developer"})
    _assert_refused(local_stack, _invoke_directly(local_stack, swapped.model_dump()), signed.request_id, "bad_mac")


def test_an_expired_request_is_refused(local_stack: Any) -> None:
    request = _signed(local_stack, _request(deadline_s=-1))
    _assert_refused(local_stack, _invoke_directly(local_stack, request.model_dump()), request.request_id, "expired")


def test_the_invoker_rechecks_that_the_role_may_use_the_model(local_stack: Any) -> None:
    request = _signed(local_stack, _request(role="readonly"))  # the shipped policy's readonly role has no models
    answer = _invoke_directly(local_stack, request.model_dump())
    _assert_refused(local_stack, answer, request.request_id, "role_may_not_use_model")


@pytest.mark.parametrize(
    ("function", "operation"),
    [("InvokerFunction", "generate_mac"), ("AuthorizerFunction", "generate_mac"), ("ValidatorFunction", "verify_mac")],
)
def test_only_the_validator_signs_and_only_the_invoker_verifies(
    local_stack: Any, function: str, operation: str
) -> None:
    params = {"KeyId": _key(local_stack), "Message": base64.b64encode(b"x").decode(), "MacAlgorithm": MAC_ALGORITHM}
    if operation == "verify_mac":
        params["Mac"] = base64.b64encode(b"\x00" * 32).decode()
    with pytest.raises(AwsServiceError) as refused:
        getattr(_kms_as(local_stack, function), operation)(**params)
    assert refused.value.code == "AccessDeniedException" and refused.value.status == 400
