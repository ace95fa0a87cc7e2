"""The limit store goes away mid-run: Bulwark fails closed, fast, and recovers when the store comes back.

Given a private stack (its own DynamoDB Local, so the shared session stack is untouched) and two keys — one whose
decision the authorizer has cached, one it has never seen — when DynamoDB Local is stopped, then every model call
answers 503 `store_unavailable` with Retry-After within a bounded time (never a 200, never a hang); and when DynamoDB
Local is started again on the same port with the tables re-created (it is in-memory: the keys are gone), then a new
key's requests succeed again without restarting any function. A key the authorizer has not cached meets the outage in
the authorizer itself: it raises, API Gateway answers through the AUTHORIZER_FAILURE gateway response, and the
authorizer writes the EMF line the `AuthorizerDependencyFailure` alarm watches (its name, namespace and dimensions
read from template.yaml).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cfnlint.decode import decode

from bulwark_dev.local.dynamodb_local import DynamoDBLocal, create_tables
from tests.e2e.conftest import LineCapture
from tests.e2e.fault_fixtures import ROOT, create_key, private_stack

pytestmark = pytest.mark.e2e
HANG_GUARD = 10.0  # seconds per request; generous (the SDK's connect timeout is 1 s, two attempts)
BODY = {"model": "demo-echo", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello there."}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, LineCapture]]:
    with private_stack(Path(tmp_path_factory.mktemp("fault-store"))) as (local, lines):
        yield local, lines


def alarm_metric(alarm: str) -> tuple[str, str, dict[str, str]]:
    """(namespace, metric name, dimensions) that an alarm of template.yaml watches."""
    template, errors = decode(str(ROOT / "template.yaml"))
    assert not errors and template is not None
    props = template["Resources"][alarm]["Properties"]
    return props["Namespace"], props["MetricName"], {d["Name"]: d["Value"] for d in props["Dimensions"]}


def emf_lines(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        text = line.partition("] ")[2]
        if line.startswith("[") and text.startswith("{") and '"_aws"' in text:
            out.append(json.loads(text))
    return out


def emits(record: dict[str, Any], namespace: str, name: str, dimensions: dict[str, str]) -> bool:
    """Whether an EMF document puts `name` into exactly the series the alarm watches."""
    for directive in record["_aws"]["CloudWatchMetrics"]:
        if directive["Namespace"] != namespace or name not in {m["Name"] for m in directive["Metrics"]}:
            continue
        if any(set(ds) == set(dimensions) for ds in directive["Dimensions"]):
            value = record.get(name, 0)
            total = sum(value) if isinstance(value, list) else value
            return all(record.get(k) == v for k, v in dimensions.items()) and total >= 1
    return False


def chat(base_url: str, key: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    resp = requests.post(
        f"{base_url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return resp, time.monotonic() - started


def assert_store_unavailable(resp: requests.Response, elapsed: float) -> None:
    assert elapsed < HANG_GUARD, f"took {elapsed:.1f} s"
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "store_unavailable")
    assert int(resp.headers["Retry-After"]) >= 1
    assert "dynamodb" not in resp.text.lower() and "127.0.0.1" not in resp.text  # no internal names


def test_store_down_fails_closed_then_recovers(stack: tuple[Any, LineCapture]) -> None:
    local, lines = stack
    env = local.cli_environment()
    cached_key = create_key(env, name="cached")
    unseen_key = create_key(env, name="unseen")
    resp, _ = chat(local.base_url, cached_key)
    assert resp.status_code == 200, resp.text  # the authorizer now holds this key's decision in memory

    port = local.dynamodb.port
    local.dynamodb.stop()

    # The authorizer's cached decision is not a way around the limiter: admission needs the store.
    for key in (cached_key, unseen_key, cached_key):
        resp, elapsed = chat(local.base_url, key)
        assert_store_unavailable(resp, elapsed)

    # The unseen key met the outage in the authorizer: it failed (never an Allow), and counted it for the alarm.
    namespace, name, dimensions = alarm_metric("AuthorizerDependencyFailureAlarm")
    deadline = time.monotonic() + 10
    while not any(emits(r, namespace, name, dimensions) for r in emf_lines(list(lines.lines))):
        assert time.monotonic() < deadline, f"no {name} EMF line from the authorizer"
        time.sleep(0.1)

    # The same port again, as a restarted store would come back; in-memory, so the tables are made afresh.
    restarted = DynamoDBLocal(port=port, progress=None)
    local.dynamodb = restarted  # the stack stops it at the end
    restarted.start()
    create_tables(restarted.client(), local.template.tables, local.table_names)

    fresh_key = create_key(env, name="after-restart")
    deadline = time.monotonic() + 30
    while True:  # the workers' pooled connections to the old process may need one failed attempt to notice
        resp, elapsed = chat(local.base_url, fresh_key)
        assert elapsed < HANG_GUARD
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        assert resp.status_code == 503, resp.text
        time.sleep(0.5)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    # The key that existed before the restart is gone with the in-memory store: refused, not let through.
    resp, _ = chat(local.base_url, unseen_key)
    assert resp.status_code == 401, resp.text
