"""The GCRA arithmetic behind every limit: exact integers, bursts never above capacity, honest Retry-After."""

from hypothesis import given
from hypothesis import strategies as st

from bulwark.limits.gcra import Bucket, LimitState, rate_limit_headers, retry_after_seconds


def admit(bucket: Bucket, state: int | None, units: int, now_ms: int) -> tuple[bool, int | None]:
    if not bucket.admits(state, units, now_ms):
        return False, state
    base = bucket.now_scaled(now_ms) if bucket.is_stale(state, now_ms) else state
    assert base is not None
    return True, base + bucket.cost(units)


@given(st.integers(min_value=1, max_value=100_000), st.integers(min_value=0, max_value=10**13))
def test_a_burst_admits_exactly_capacity(capacity: int, now_ms: int) -> None:
    bucket, state, admitted = Bucket(capacity), None, 0
    for _ in range(min(capacity, 2000) + 5):
        ok, state = admit(bucket, state, 1, now_ms)
        admitted += ok
    assert admitted == min(capacity, min(capacity, 2000) + 5)


@given(
    st.integers(min_value=1, max_value=500),
    st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 5)), min_size=1, max_size=300),
)
def test_no_window_ever_admits_more_than_capacity_plus_refill(capacity: int, steps: list[tuple[int, int]]) -> None:
    """Over any span of T ms, admitted units <= capacity + capacity * T / window (the bucket's guarantee)."""
    bucket, state, now, log = Bucket(capacity), None, 10**12, []
    for gap, units in steps:
        now += gap
        ok, state = admit(bucket, state, units, now)
        if ok:
            log.append((now, units))
    for i, (start, _) in enumerate(log):
        total = 0
        for t, u in log[i:]:
            total += u
            assert total <= capacity + capacity * (t - start) / bucket.window_ms + 1e-9


@given(st.integers(1, 1000), st.integers(1, 50), st.integers(0, 10**12))
def test_retry_after_is_never_early(capacity: int, units: int, now_ms: int) -> None:
    bucket, state = Bucket(capacity), None
    for _ in range(capacity + 1):
        _, state = admit(bucket, state, 1, now_ms)
    if units > capacity or bucket.admits(state, units, now_ms):
        return
    wait = bucket.wait_ms(state, units, now_ms)
    assert not bucket.admits(state, units, now_ms + wait - 1) if wait > 0 else True
    assert bucket.admits(state, units, now_ms + wait)
    assert retry_after_seconds(wait) * 1000 >= wait


def test_remaining_and_reset() -> None:
    bucket, state, now = Bucket(60), None, 1_000_000
    for _ in range(6):
        _, state = admit(bucket, state, 1, now)
    assert bucket.remaining(state, now) == 54
    assert bucket.reset_ms(state, now) == 6_000
    assert bucket.remaining(state, now + 6_000) == 60


def test_headers_follow_openai_and_the_ietf_draft() -> None:
    h = rate_limit_headers([LimitState("rpm", 60, 12, 31_000, 60), LimitState("tpm", 1000, 900, 500, 60)])
    assert h["x-ratelimit-limit-requests"] == "60"
    assert h["x-ratelimit-remaining-requests"] == "12"
    assert h["x-ratelimit-reset-requests"] == "31s"
    assert h["x-ratelimit-reset-tokens"] == "500ms"
    assert h["RateLimit-Policy"] == '"rpm";q=60;w=60, "tpm";q=1000;w=60'
    assert h["RateLimit"] == '"rpm";r=12;t=31, "tpm";r=900;t=1'
