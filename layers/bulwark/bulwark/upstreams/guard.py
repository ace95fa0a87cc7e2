"""Bounded failure for every upstream call: deadline-derived timeouts, jittered retries, a circuit breaker per upstream.

Adapters describe one attempt as a function of its timeout and raise `AttemptError` (never a client-visible error)
for anything that went wrong on the wire. The guard decides whether to retry, trips the breaker, and maps the final
failure to 502 `upstream_error` / 504 `upstream_timeout`, with no upstream URL, secret or raw text in it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

from bulwark.errors import BulwarkError, UpstreamCircuitOpen, UpstreamError, UpstreamTimeout
from bulwark.observability.tracing import subsegment
from bulwark.policy import UpstreamConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Time kept back from the deadline for the invoker to shape and return the answer.
DEADLINE_MARGIN_SECONDS = 0.25
# Below this an attempt cannot succeed; give up instead of starting it.
MIN_ATTEMPT_SECONDS = 0.05
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0

CircuitState = Literal["closed", "open", "half_open"]


class AttemptError(Exception):
    """One failed attempt, described for the guard. `reason` is a short token for logs, never upstream text."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
        trips: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.timeout = timeout
        # Whether this failure says the upstream is unhealthy (a 400 about our request does not).
        self.trips = trips


def http_failure(status: int, retry_after: str | None = None) -> AttemptError:
    """Classify a non-2xx status: 408/429/5xx are retryable; other 4xx concern the request, not upstream health."""
    retryable = status in (408, 429) or status >= 500
    return AttemptError(
        f"http_{status}",
        status=status,
        retryable=retryable,
        retry_after=parse_retry_after(retry_after),
        trips=retryable,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime  # imported where used: the HTTP-date form is rare

        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class CircuitBreaker:
    """closed → open after `threshold` consecutive failed calls → half-open after `reset_seconds` (one probe)."""

    def __init__(
        self, name: str, threshold: int, reset_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def acquire(self) -> bool:
        """Admit a call or raise UpstreamCircuitOpen. Returns True if the call is the half-open probe."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return False
            if state == "half_open" and not self._probe_in_flight:
                self._probe_in_flight = True
                logger.info("circuit half-open: probing", extra={"upstream": self.name})
                return True
            remaining = 1.0
            if self._opened_at is not None and state == "open":
                remaining = self.reset_seconds - (self._clock() - self._opened_at)
        raise UpstreamCircuitOpen(retry_after=max(1, math.ceil(remaining)))

    def record_success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                logger.info("circuit closed", extra={"upstream": self.name})
            self._failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            reopen = self._probe_in_flight
            self._probe_in_flight = False
            if reopen or (self._opened_at is None and self._failures >= self.threshold):
                self._opened_at = self._clock()
                logger.warning("circuit opened", extra={"upstream": self.name, "consecutive_failures": self._failures})

    def release(self) -> None:
        """A call ended without saying anything about upstream health (e.g. a bug on our side)."""
        with self._lock:
            self._probe_in_flight = False


class BreakerRegistry:
    """One breaker per upstream name, per container."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, cfg: UpstreamConfig) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(
                    name, cfg.circuit_failure_threshold, cfg.circuit_reset_seconds, clock=self._clock
                )
                self._breakers[name] = breaker
            else:  # the policy file may change under a warm container
                breaker.threshold = cfg.circuit_failure_threshold
                breaker.reset_seconds = cfg.circuit_reset_seconds
            return breaker


class Guard:
    def __init__(
        self,
        name: str,
        cfg: UpstreamConfig,
        breaker: CircuitBreaker,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.breaker = breaker
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    def call(self, attempt: Callable[[float], T], *, deadline: float) -> T:
        """Run `attempt(timeout_seconds)` under the breaker with bounded retries inside `deadline` (monotonic)."""
        probe = self.breaker.acquire()
        attempts = 1 if probe else 1 + self.cfg.max_retries  # a probe is one quick look, not a retry storm
        last: AttemptError | None = None
        for i in range(attempts):
            remaining = deadline - self._clock() - DEADLINE_MARGIN_SECONDS
            if remaining < MIN_ATTEMPT_SECONDS:
                last = last or AttemptError("deadline", retryable=False, timeout=True)
                break
            try:
                # One subsegment per attempt, named after the model (the trace id is never sent: upstreams are
                # third parties); a failed attempt carries its reason.
                with subsegment(f"upstream {self.name}", "remote") as sub:
                    if sub is not None:
                        sub.put_annotation("upstream_kind", self.cfg.kind)
                        sub.put_annotation("attempt", i + 1)
                    try:
                        result = attempt(min(self.cfg.timeout_seconds, remaining))
                    except AttemptError as failure:
                        if sub is not None:
                            sub.put_annotation("failure", failure.reason)
                        raise
            except AttemptError as failure:
                last = failure
                logger.warning(
                    "upstream attempt failed",
                    extra={"upstream": self.name, "attempt": i + 1, "reason": failure.reason, "status": failure.status},
                )
                if not failure.retryable or i == attempts - 1:
                    break
                delay = self._delay(i, failure.retry_after, deadline)
                if delay is None:
                    break
                self._sleep(delay)
                continue
            except UpstreamError:
                self.breaker.record_failure()
                raise
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.record_success()
            return result
        assert last is not None
        raise self._fail(last)

    def stream(self, open_stream: Callable[[float], Iterator[T]], *, deadline: float) -> Iterator[T]:
        """Open a stream under `call` (connect + status, so errors come before any byte) and guard its reading."""
        items = self.call(open_stream, deadline=deadline)
        return self._guarded(items, deadline)

    def _guarded(self, items: Iterator[T], deadline: float) -> Iterator[T]:
        try:
            for item in items:
                yield item
                if self._clock() > deadline:
                    raise AttemptError("deadline_mid_stream", retryable=False, timeout=True)
        except AttemptError as failure:
            logger.warning("upstream stream failed", extra={"upstream": self.name, "reason": failure.reason})
            raise self._fail(failure) from None
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _delay(self, attempt_index: int, retry_after: float | None, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None if the wait would not fit the deadline."""
        if retry_after is not None:
            delay = retry_after
        else:  # full jitter: uniform in [0, min(cap, base·2^i)]
            delay = self._rng() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt_index)
        if self._clock() + delay + MIN_ATTEMPT_SECONDS > deadline - DEADLINE_MARGIN_SECONDS:
            logger.info("retry would not fit the deadline; giving up", extra={"upstream": self.name})
            return None
        return delay

    def _fail(self, failure: AttemptError) -> BulwarkError:
        if failure.trips:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()  # the upstream answered coherently; it is healthy
        if failure.timeout:
            return UpstreamTimeout()
        headers = {}
        if failure.status == 429 and failure.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(failure.retry_after)))
        return UpstreamError(headers=headers)
