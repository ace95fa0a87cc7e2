"""Circuit breaker states and the guard's retry decisions, on a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import pytest

from bulwark.errors import UpstreamCircuitOpen, UpstreamError, UpstreamTimeout
from bulwark.policy import UpstreamConfig
from bulwark.upstreams.guard import AttemptError, CircuitBreaker, Guard, http_failure, parse_retry_after


def state_of(breaker: CircuitBreaker) -> str:
    return breaker.state  # via a function: mypy would otherwise narrow the property across calls


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cfg(**fields: object) -> UpstreamConfig:
    return UpstreamConfig.model_validate({"kind": "http", "url": "https://x", "timeout_seconds": 5, **fields})


def test_breaker_cycle() -> None:
    clock = Clock()
    breaker = CircuitBreaker("u", threshold=2, reset_seconds=10, clock=clock)
    assert breaker.acquire() is False
    breaker.record_failure()
    assert state_of(breaker) == "closed"
    breaker.record_failure()
    assert state_of(breaker) == "open"
    clock.now += 4
    with pytest.raises(UpstreamCircuitOpen) as err:
        breaker.acquire()
    assert err.value.retry_after == 6
    clock.now += 6
    assert state_of(breaker) == "half_open"
    assert breaker.acquire() is True  # the probe
    with pytest.raises(UpstreamCircuitOpen):
        breaker.acquire()  # only one
    breaker.record_failure()
    assert state_of(breaker) == "open"  # a failed probe re-opens at once
    clock.now += 10
    assert breaker.acquire() is True
    breaker.record_success()
    assert state_of(breaker) == "closed" and breaker.acquire() is False


def test_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker("u", threshold=2, reset_seconds=10, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state_of(breaker) == "closed"


def make_guard(clock: Clock, **fields: object) -> tuple[Guard, list[float]]:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    config = cfg(**fields)
    breaker = CircuitBreaker("u", config.circuit_failure_threshold, config.circuit_reset_seconds, clock=clock)
    return Guard("u", config, breaker, sleep=sleep, clock=clock, rng=lambda: 0.5), waits


def test_retryable_failures_are_retried_with_full_jitter() -> None:
    clock = Clock()
    guard, waits = make_guard(clock, max_retries=3)
    failures = [http_failure(503), http_failure(502), http_failure(500)]

    def attempt(timeout: float) -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert guard.call(attempt, deadline=clock.now + 20) == "ok"
    assert waits == [0.05, 0.1, 0.2]  # rng 0.5 * min(cap, 0.1 * 2**i)


def test_timeouts_are_derived_from_the_deadline() -> None:
    clock = Clock()
    guard, _ = make_guard(clock, timeout_seconds=5)
    seen: list[float] = []

    def attempt(timeout: float) -> str:
        seen.append(timeout)
        return "ok"

    guard.call(attempt, deadline=clock.now + 2)
    guard.call(attempt, deadline=clock.now + 60)
    assert seen == [pytest.approx(1.75), 5]
    with pytest.raises(UpstreamTimeout):
        guard.call(attempt, deadline=clock.now + 0.2)  # nothing left after the margin


def test_retry_after_that_does_not_fit_gives_up() -> None:
    clock = Clock()
    guard, waits = make_guard(clock)

    def attempt(timeout: float) -> str:
        raise http_failure(429, "10")

    with pytest.raises(UpstreamError) as err:
        guard.call(attempt, deadline=clock.now + 5)
    assert waits == [] and err.value.headers == {"Retry-After": "10"}


def test_timeouts_map_to_504_and_count_toward_the_circuit() -> None:
    clock = Clock()
    guard, _ = make_guard(clock, max_retries=0, circuit_failure_threshold=1)

    def attempt(timeout: float) -> str:
        raise AttemptError("timeout", retryable=True, timeout=True)

    with pytest.raises(UpstreamTimeout):
        guard.call(attempt, deadline=clock.now + 30)
    assert state_of(guard.breaker) == "open"


def test_a_bug_in_the_attempt_releases_the_probe() -> None:
    clock = Clock()
    guard, _ = make_guard(clock, circuit_failure_threshold=1, circuit_reset_seconds=1)
    guard.breaker.record_failure()
    clock.now += 1

    def attempt(timeout: float) -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        guard.call(attempt, deadline=clock.now + 30)
    assert guard.breaker.acquire() is True  # the next caller may probe


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-1", 0.0), ("soon", None), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412470.0  # 10 s before the HTTP-date above
    assert parse_retry_after(value, now=now) == expected
