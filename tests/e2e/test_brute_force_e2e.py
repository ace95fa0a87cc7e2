"""Failed attempts and network lists through `bulwark local` (issue 16, items 3 and 6), on a private stack whose policy
has a low threshold, a denied address and a trusted one. Requests come from their own loopback addresses
(127.0.0.0/8 is all local), so each test's address is its own.

- Past the threshold a source address is cooled down: its wrong credentials stay 401 (never an Allow), and a valid
  key from it is verified first and then refused with 429 too_many_failed_attempts; other addresses are unaffected.
- A trusted address is never cooled down; wrong secrets for one key id from many addresses never lock out its owner.
- A denied address gets API Gateway's 403 (ACCESS_DENIED, contract shape, code ip_not_allowed) with or without a key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from bulwark.auth.keys import new_api_key, parse_api_key
from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from tests.e2e.conftest import LineCapture
from tests.e2e.fault_fixtures import create_key, private_stack, write_policy

pytestmark = pytest.mark.e2e
THRESHOLD = 3
DENIED, TRUSTED = "127.0.0.99", "127.0.0.88"


class SourceAddressAdapter(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", SourceAddressAdapter(address))
    return s


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, shared_dynamodb: DynamoDBLocal
) -> Iterator[tuple[Any, LineCapture]]:
    tmp = Path(tmp_path_factory.mktemp("lockout"))
    failed = {"threshold": THRESHOLD, "key_threshold": THRESHOLD, "window_seconds": 300, "cooldown_seconds": 900}
    policy = write_policy(
        tmp, network={"deny_cidrs": [f"{DENIED}/32"], "failed_auth": {**failed, "trusted_cidrs": [f"{TRUSTED}/32"]}}
    )
    with private_stack(tmp, policy, dynamodb=shared_dynamodb) as running:
        yield running


def get_models(stack: Any, address: str, credential: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return session_from(address).get(f"{stack.base_url}/v1/models", headers=headers, timeout=10)


def test_repeated_failures_lock_out_the_source_address(stack: tuple[Any, LineCapture]) -> None:
    local, _ = stack
    good = create_key(local.cli_environment(), name="good")
    statuses = [get_models(local, "127.0.0.77", f"bwk_guess{i}").status_code for i in range(THRESHOLD + 2)]
    assert statuses == [401] * (THRESHOLD + 2)  # an unauthenticated caller is never answered through an Allow
    locked = get_models(local, "127.0.0.77", good)
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"]["code"] == "too_many_failed_attempts"
    assert int(locked.headers["Retry-After"]) > 60
    assert get_models(local, "127.0.0.78", good).status_code == 200  # a bystander address is unaffected


def test_a_trusted_address_is_never_locked_out(stack: tuple[Any, LineCapture]) -> None:
    local, _ = stack
    good = create_key(local.cli_environment(), name="behind-the-nat")
    statuses = [get_models(local, TRUSTED, f"bwk_guess{i}").status_code for i in range(2 * THRESHOLD)]
    assert statuses == [401] * (2 * THRESHOLD)
    assert get_models(local, TRUSTED, good).status_code == 200


def test_guessing_one_key_id_from_many_addresses_never_locks_out_its_owner(stack: tuple[Any, LineCapture]) -> None:
    local, lines = stack
    good = create_key(local.cli_environment(), name="targeted")
    parsed = parse_api_key(good)
    assert parsed is not None
    for i in range(THRESHOLD + 1):
        forged, _ = new_api_key(parsed.key_id)
        assert get_models(local, f"127.0.0.{60 + i}", forged).status_code == 401
    assert get_models(local, "127.0.0.70", good).status_code == 200
    assert any("key id under attack" in line and parsed.key_id in line for line in lines.lines)


@pytest.mark.parametrize("with_key", [False, True])
def test_a_denied_address_gets_api_gateways_403_in_the_contract_shape(
    stack: tuple[Any, LineCapture], with_key: bool
) -> None:
    local, _ = stack
    key = create_key(local.cli_environment(), name="denied") if with_key else None
    resp = get_models(local, DENIED, key)
    assert resp.status_code == 403, resp.text
    assert resp.json() == {
        "error": {
            "message": "Requests from this source address are not allowed.",
            "type": "permission_error",
            "param": None,
            "code": "ip_not_allowed",
        }
    }
    assert resp.headers["x-request-id"]
    # API Gateway answered it, so the authorizer wrote its audit record (the validator never ran).
    local, lines = stack
    deadline = time.monotonic() + 10
    while not any(resp.headers["x-request-id"] in line and '"ip_not_allowed"' in line for line in lines.lines):
        assert time.monotonic() < deadline, "no audit record for the denied request"
        time.sleep(0.1)
