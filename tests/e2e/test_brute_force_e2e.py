"""Brute force through `bulwark local`: past the threshold, a source IP gets 429 too_many_failed_attempts for a
cool-down — even with a valid key — while other addresses are unaffected. Requests come from their own loopback
address (127.0.0.0/8 is all local), so the shared stack's other tests are not locked out."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.e2e.conftest import E2E_FAILED_AUTH_THRESHOLD
from tests.e2e.keys import create_key

pytestmark = pytest.mark.e2e


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


def test_repeated_failures_lock_out_the_source_address(local_stack: Any) -> None:
    good, _ = create_key(local_stack.env)
    attacker = session_from("127.0.0.77")
    url = f"{local_stack.base_url}/v1/models"
    statuses = []
    for i in range(2 * E2E_FAILED_AUTH_THRESHOLD):  # the bucket refills slowly while we hammer; stop once locked
        r = attacker.get(url, headers={"Authorization": f"Bearer bwk_guess{i}"}, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses.count(401) >= E2E_FAILED_AUTH_THRESHOLD and statuses[-1] == 429
    locked = attacker.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=10)
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "too_many_failed_attempts"
    assert int(locked.headers["Retry-After"]) > 60
    bystander = session_from("127.0.0.78").get(url, headers={"Authorization": f"Bearer {good}"}, timeout=10)
    assert bystander.status_code == 200
