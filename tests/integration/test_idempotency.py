"""Idempotency-Key records against DynamoDB Local (the real engine, the lean client the invoker uses).

A controllable clock in 2033 keeps every TTL far from DynamoDB Local's sweeper.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bulwark.errors import IdempotencyConflict, InvalidRequest, StoreUnavailable
from bulwark.store.idempotency import IDEMPOTENCY_WINDOW_SECONDS, Idempotency

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, t: float = 2_000_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Model:
    """Counts its calls; answers ok unless told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"ok": not self.fail, "body": f"answer {self.calls}"}


@pytest.fixture
def setup(dynamodb_local: Any, fresh_tables: dict[str, str]) -> tuple[Idempotency, Clock, Model, Any]:
    client = dynamodb_local.wire_client()
    clock = Clock()
    return Idempotency(fresh_tables["IdempotencyTable"], lambda: client, clock), clock, Model(), client


def deadline(clock: Clock, seconds: float = 30) -> int:
    return int((clock.t + seconds) * 1000)


def test_a_retry_gets_the_first_result_without_a_second_call(setup: Any) -> None:
    idem, clock, model, _ = setup
    first = idem.run("key:a", "order-1", "payload", model, deadline(clock))
    again = idem.run("key:a", "order-1", "payload", model, deadline(clock))
    assert first == again == {"ok": True, "body": "answer 1"} and model.calls == 1


def test_the_key_is_the_callers_own(setup: Any) -> None:
    idem, clock, model, _ = setup
    idem.run("key:a", "order-1", "payload", model, deadline(clock))
    assert idem.run("key:b", "order-1", "payload", model, deadline(clock))["body"] == "answer 2"


def test_a_key_reused_for_a_different_request_is_refused(setup: Any) -> None:
    idem, clock, model, _ = setup
    idem.run("key:a", "order-1", "payload", model, deadline(clock))
    with pytest.raises(InvalidRequest) as info:
        idem.run("key:a", "order-1", "another payload", model, deadline(clock))
    assert info.value.code == "idempotency_key_reused" and model.calls == 1


def test_a_failure_is_not_stored_so_a_retry_really_retries(setup: Any) -> None:
    idem, clock, model, _ = setup
    model.fail = True
    assert idem.run("key:a", "order-1", "payload", model, deadline(clock))["ok"] is False
    model.fail = False
    assert idem.run("key:a", "order-1", "payload", model, deadline(clock)) == {"ok": True, "body": "answer 2"}


def test_a_duplicate_while_the_first_is_in_flight_is_refused_at_once(setup: Any) -> None:
    idem, clock, _model, _ = setup
    inside, release = threading.Event(), threading.Event()
    second: list[IdempotencyConflict] = []

    def slow() -> dict[str, Any]:
        inside.set()
        release.wait(10)
        return {"ok": True, "body": "slow"}

    first = threading.Thread(target=idem.run, args=("key:a", "order-1", "payload", slow, deadline(clock)))
    first.start()
    assert inside.wait(10)
    try:
        idem.run("key:a", "order-1", "payload", slow, deadline(clock))
    except IdempotencyConflict as exc:
        second.append(exc)
    finally:
        release.set()
        first.join(10)
    assert second and second[0].status == 409
    assert idem.run("key:a", "order-1", "payload", slow, deadline(clock))["body"] == "slow"  # then replayed


def test_many_concurrent_duplicates_call_the_model_exactly_once(setup: Any) -> None:
    idem, clock, model, _ = setup
    lock = threading.Lock()
    outcomes: list[str] = []

    def one() -> None:
        try:
            idem.run("key:a", "order-1", "payload", model, deadline(clock))
            outcome = "ok"
        except IdempotencyConflict:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert model.calls == 1 and len(outcomes) == 16 and "ok" in outcomes


def test_an_error_inside_the_call_frees_the_key_at_once(setup: Any) -> None:
    idem, clock, model, _ = setup

    def breaks() -> dict[str, Any]:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        idem.run("key:a", "order-1", "payload", breaks, deadline(clock))
    assert idem.run("key:a", "order-1", "payload", model, deadline(clock))["ok"] and model.calls == 1


def test_a_claim_whose_invocation_died_lapses_at_its_deadline(setup: Any, fresh_tables: dict[str, str]) -> None:
    idem, clock, model, client = setup
    table = fresh_tables["IdempotencyTable"]
    claims: list[dict[str, Any]] = []

    def killed() -> dict[str, Any]:
        claims.extend(client.scan(TableName=table)["Items"])  # the claim as it stands during the call
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        idem.run("key:a", "order-1", "payload", killed, deadline(clock, 30))
    # An invoker killed mid-call (timeout, crash) cannot delete its claim: put back what it would leave behind.
    client.put_item(TableName=table, Item=claims[0])
    with pytest.raises(IdempotencyConflict):  # still in flight as far as anyone can tell
        idem.run("key:a", "order-1", "payload", model, deadline(clock))
    clock.t += 31
    assert idem.run("key:a", "order-1", "payload", model, deadline(clock))["ok"] and model.calls == 1


def test_an_answer_too_big_for_one_item_is_returned_but_not_stored(setup: Any) -> None:
    idem, clock, _model, _ = setup
    calls = []

    def big() -> dict[str, Any]:
        calls.append(1)
        return {"ok": True, "body": "x" * 400_000}

    assert len(idem.run("key:a", "order-1", "payload", big, deadline(clock))["body"]) == 400_000
    idem.run("key:a", "order-1", "payload", big, deadline(clock))
    assert len(calls) == 2


def test_a_record_is_kept_for_the_window_then_the_key_is_free(setup: Any) -> None:
    idem, clock, model, _ = setup
    idem.run("key:a", "order-1", "payload", model, deadline(clock))
    clock.t += IDEMPOTENCY_WINDOW_SECONDS - 1
    assert idem.run("key:a", "order-1", "payload", model, deadline(clock))["body"] == "answer 1"
    clock.t += 2  # past the window (DynamoDB's TTL deletion lags; the condition does not rely on it)
    assert idem.run("key:a", "order-1", "payload", model, deadline(clock))["body"] == "answer 2"


def test_the_record_holds_a_hash_of_the_key_never_the_key(setup: Any, fresh_tables: dict[str, str]) -> None:
    idem, clock, model, client = setup
    idem.run("key:a", "order-secret-42", "payload", model, deadline(clock))
    items = client.scan(TableName=fresh_tables["IdempotencyTable"])["Items"]
    assert len(items) == 1 and "order-secret-42" not in repr(items) and "key:a" not in repr(items)
    assert items[0]["status"] == {"S": "COMPLETED"} and "in_progress_expiration" not in items[0]


def test_a_store_that_is_down_fails_closed_without_calling_the_model(dynamodb_local: Any) -> None:
    from bulwark_dev.local.dynamodb_local import local_wire_client

    model = Model()
    down = Idempotency("bulwark-idem", lambda: local_wire_client("http://127.0.0.1:9"), Clock())
    with pytest.raises(StoreUnavailable):
        down.run("key:a", "order-1", "payload", model, deadline(Clock()))
    assert model.calls == 0


def test_an_engine_that_does_not_return_the_old_record_is_read_instead(setup: Any) -> None:
    from bulwark.aws.wire import AwsServiceError

    idem, clock, model, client = setup

    class WithoutOldItem:
        """The client, but a refused put comes back without the record (as an engine may answer)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def put_item(self, **params: Any) -> dict[str, Any]:
            try:
                return dict(client.put_item(**params))
            except AwsServiceError as exc:
                raise AwsServiceError(exc.code, exc.message, exc.status, {}) from None

    plain = Idempotency(idem._table, WithoutOldItem, clock)
    plain.run("key:a", "order-1", "payload", model, deadline(clock))
    assert plain.run("key:a", "order-1", "payload", model, deadline(clock))["body"] == "answer 1"
    with pytest.raises(InvalidRequest):
        plain.run("key:a", "order-1", "other", model, deadline(clock))
    assert model.calls == 1
