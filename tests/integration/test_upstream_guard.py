"""The guard end to end over real HTTP: the circuit breaker's open / half-open / closed cycle, deadlines, retry cost."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from bulwark.errors import UpstreamCircuitOpen, UpstreamError, UpstreamTimeout
from bulwark.upstreams import build_upstream
from bulwark.upstreams.guard import CircuitBreaker
from tests.integration.wire import openai
from tests.integration.wire.fixtures import config, deadline, new_clients
from tests.integration.wire.server import Reply, WireServer


def state_of(breaker: CircuitBreaker) -> str:
    return breaker.state  # via a function: mypy would otherwise narrow the property across calls


@pytest.fixture
def server() -> Iterator[WireServer]:
    srv = WireServer(lambda _r: Reply.json({"ok": True})).start()
    yield srv
    srv.stop()


def test_circuit_opens_half_opens_and_closes(server: WireServer) -> None:
    # Given an upstream with threshold 3 and a 0.5 s reset, failing hard
    clients, _ = new_clients()
    cfg = config("http", url=server.url + "/x", max_retries=0, circuit_failure_threshold=3, circuit_reset_seconds=0.5)
    upstream = build_upstream("legacy", cfg, clients=clients)
    breaker = clients.breakers.get("legacy", cfg)
    server.script(*[openai.error(500)] * 4)

    # When three calls fail, the circuit opens
    for _ in range(3):
        with pytest.raises(UpstreamError):
            upstream.invoke({}, deadline=deadline())
    assert state_of(breaker) == "open"

    # Then calls are refused without touching the upstream: 503 with Retry-After
    calls_before = len(server.requests)
    with pytest.raises(UpstreamCircuitOpen) as err:
        upstream.invoke({}, deadline=deadline())
    assert err.value.status == 503 and err.value.code == "upstream_circuit_open"
    assert err.value.headers["Retry-After"] == "1"
    assert len(server.requests) == calls_before

    # After the reset time one probe goes through; it fails, so the circuit opens again
    time.sleep(0.55)
    assert state_of(breaker) == "half_open"
    with pytest.raises(UpstreamError):
        upstream.invoke({}, deadline=deadline())
    assert state_of(breaker) == "open" and len(server.requests) == calls_before + 1

    # After another reset the probe succeeds and the circuit closes
    time.sleep(0.55)
    answer, _ = upstream.invoke({}, deadline=deadline())
    assert answer == {"ok": True} and state_of(breaker) == "closed"
    upstream.invoke({}, deadline=deadline())


def test_only_one_probe_while_half_open(server: WireServer) -> None:
    clients, _ = new_clients()
    cfg = config("http", url=server.url + "/x", max_retries=0, circuit_failure_threshold=1, circuit_reset_seconds=0.2)
    upstream = build_upstream("legacy", cfg, clients=clients)
    server.script(openai.error(500), Reply.json({"ok": True}, delay=0.5))
    with pytest.raises(UpstreamError):
        upstream.invoke({}, deadline=deadline())
    time.sleep(0.25)

    probe = threading.Thread(target=upstream.invoke, args=({},), kwargs={"deadline": deadline()})
    probe.start()
    time.sleep(0.1)
    with pytest.raises(UpstreamCircuitOpen):  # a second caller does not pile onto a recovering upstream
        upstream.invoke({}, deadline=deadline())
    probe.join()
    assert clients.breakers.get("legacy", cfg).state == "closed"


def test_client_errors_do_not_open_the_circuit(server: WireServer) -> None:
    clients, _ = new_clients()
    cfg = config("http", url=server.url + "/x", circuit_failure_threshold=2)
    upstream = build_upstream("legacy", cfg, clients=clients)
    server.script(*[openai.error(400)] * 3)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            upstream.invoke({}, deadline=deadline())
    assert clients.breakers.get("legacy", cfg).state == "closed"


def test_attempt_timeout_is_cut_to_the_request_deadline(server: WireServer) -> None:
    # Given a generous per-attempt timeout but only 1 s left on the request
    clients, _ = new_clients()
    upstream = build_upstream("legacy", config("http", url=server.url + "/x", timeout_seconds=20), clients=clients)
    server.script(Reply.json({"late": True}, delay=3))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        upstream.invoke({}, deadline=deadline(1.0))
    # Then the call ends before the deadline (minus the margin kept for answering)
    assert time.monotonic() - started < 1.0


def test_retry_overhead_is_small(server: WireServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Measures (and prints) what a 500-then-retry costs over a clean call: the jittered backoff plus one round trip."""
    clients, sleep = new_clients()
    upstream = build_upstream("legacy", config("http", url=server.url + "/x"), clients=clients)
    upstream.invoke({}, deadline=deadline())  # warm the pool

    def timed(script: list[Reply]) -> float:
        server.script(*script)
        started = time.perf_counter()
        upstream.invoke({}, deadline=deadline())
        return time.perf_counter() - started

    clean = [timed([]) for _ in range(20)]
    retried = [timed([openai.error(500)]) for _ in range(20)]
    waits = sleep.waits[-20:]
    overhead = statistics.median(retried) - statistics.median(clean)
    with capsys.disabled():
        print(
            f"\nclean call median {statistics.median(clean) * 1000:.2f} ms; "
            f"500+retry median {statistics.median(retried) * 1000:.2f} ms "
            f"(backoff median {statistics.median(waits) * 1000:.1f} ms, overhead {overhead * 1000:.1f} ms)"
        )
    assert all(0 <= w <= 0.1 for w in waits)
    assert overhead < 0.2
