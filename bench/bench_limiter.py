"""Limiter throughput against DynamoDB Local: admissions per second under 1/8/32 threads, writes per admitted request,
and an exactness check (N concurrent requests against a limit of L admit exactly L).

`CountersTable.admit` + `settle` in-process (what the validator does per request), against the real engine with the
template's own counters table. Two shapes: every thread its own caller (the common case: no contention), and every
thread the same caller (a hot key: conditional-write conflicts and retries).

Budgets: the same loop in the validator's shape (settle with deferred refunds, then the refund flush), with and without
money budgets, counting every DynamoDB call the limiter sends: a budget is a condition of the admission write, so the
calls per admitted request must not change.

Run: `python bench/bench_limiter.py [--seconds 3] [--budgets-only]` (starts and stops its own DynamoDB Local).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import threading
import time
import uuid
from typing import Any

from _common import ROOT, pct, say, table, verdict

from bulwark.errors import RateLimited
from bulwark.store.counters_table import Allowance, CountersTable

HIGH = Allowance(requests_per_minute=10_000_000, tokens_per_minute=10_000_000_000, daily_tokens=10**15)
BUDGETED = Allowance(
    requests_per_minute=10_000_000,
    tokens_per_minute=10_000_000_000,
    daily_tokens=10**15,
    budget_day=10**15,
    budget_month=10**16,
)


class CallCounter:
    """The real client, counting the calls sent through it (the figure the budgets section reports)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in ("update_item", "get_item", "batch_get_item", "put_item", "transact_write_items"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
            return attr(*args, **kwargs)

        return call


def budget_calls(
    endpoint: str, table_name: str, threads: int, seconds: float, allowance: Allowance
) -> dict[str, float]:
    """Admit, settle (deferred, as the validator does: reserved 300 tokens / 1000 micro-USD, used 120 / 400) and flush,
    per thread its own caller; returns admissions/s and DynamoDB calls per admitted request."""
    client = CallCounter(_client(endpoint))
    counters = CountersTable(client, table_name)
    stop = time.monotonic() + seconds
    run = uuid.uuid4().hex[:6]
    lock = threading.Lock()
    admitted_total = [0]

    def worker(i: int) -> None:
        principal = f"key:budget-{run}-{i}"
        admitted = 0
        while time.monotonic() < stop:
            adm = counters.admit(principal, allowance, 300, cost=1_000)
            admitted += 1
            counters.settle(adm, 120, defer_refund=True, actual_cost=400)
            counters.flush_pending()
        with lock:
            admitted_total[0] += admitted

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    elapsed = time.monotonic() - started
    counters.flush_pending(older_than_ms=0, max_writes=10**6)  # what shutdown writes: counted too
    n = max(1, admitted_total[0])
    return {"rate": admitted_total[0] / elapsed, "calls": client.calls / n}


def budget_exactness(counters: CountersTable, *, requests: int, fits: int, runs: int) -> list[int]:
    """`requests` concurrent admissions of 1000 micro-USD each against a day budget of `fits` x 1000."""
    allowance = Allowance(
        requests_per_minute=10**6, tokens_per_minute=10**9, daily_tokens=10**12, budget_day=fits * 1_000
    )
    results = []
    for _ in range(runs):
        principal = f"key:budget-exact-{uuid.uuid4().hex[:8]}"
        barrier = threading.Barrier(requests)

        def one(_: int, principal: str = principal, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            try:
                counters.admit(principal, allowance, 10, cost=1_000)
            except RateLimited:
                return False
            return True

        with concurrent.futures.ThreadPoolExecutor(requests) as pool:
            results.append(sum(pool.map(one, range(requests))))
    return results


def run_budgets(endpoint: str, table_name: str, seconds: float) -> str:
    rows = []
    figures: dict[tuple[str, int], float] = {}
    for threads in (1, 8):
        for label, allowance in (("no budget", HIGH), ("day + month budgets", BUDGETED)):
            say(f"limiter budgets: {threads} thread(s), {label}")
            r = budget_calls(endpoint, table_name, threads, seconds, allowance)
            figures[(label, threads)] = r["calls"]
            rows.append((label, threads, f"{r['rate']:.0f}", f"{r['calls']:.3f}"))
    say("limiter budgets: exactness, 100 concurrent against a budget that fits 5, 5 runs")
    exact = budget_exactness(CountersTable(_client(endpoint), table_name), requests=100, fits=5, runs=5)
    same = all(abs(figures[("day + month budgets", t)] - figures[("no budget", t)]) < 0.02 for t in (1, 8))
    return "\n".join(
        [
            "### Budgets (admit + deferred settle + refund flush, as the validator runs them; DynamoDB Local)",
            "",
            table(["caller's limits", "threads", "admissions/s", "DynamoDB calls per admitted request"], rows),
            "",
            table(
                ["check", "result", "target"],
                [
                    ("calls per admitted request, budgets vs none", "same" if same else "differ", verdict(same)),
                    ("100 concurrent, budget fits 5", ", ".join(map(str, exact)), verdict(all(x == 5 for x in exact))),
                ],
            ),
        ]
    )


def _client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(max_pool_connections=64, retries={"max_attempts": 2, "mode": "standard"}, read_timeout=10),
    )


def throughput(counters: CountersTable, threads: int, seconds: float, *, hot: bool) -> dict[str, float]:
    """Admit + settle in a loop from `threads` threads for `seconds`; returns rate and writes per admission."""
    stop = time.monotonic() + seconds
    run = uuid.uuid4().hex[:6]
    lock = threading.Lock()
    totals = {"admitted": 0, "admit_writes": 0, "settle_writes": 0, "refused": 0}

    def worker(i: int) -> None:
        principal = f"key:bench-{run}-{'hot' if hot else i}"
        admitted = admit_writes = settle_writes = refused = 0
        while time.monotonic() < stop:
            try:
                adm = counters.admit(principal, HIGH, 300)
            except RateLimited:  # only under persistent contention (8 attempts)
                refused += 1
                continue
            admitted += 1
            admit_writes += adm.writes
            settle_writes += counters.settle(adm, 120)  # the real usage differs from the reservation: one write
        with lock:
            totals["admitted"] += admitted
            totals["admit_writes"] += admit_writes
            totals["settle_writes"] += settle_writes
            totals["refused"] += refused

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    elapsed = time.monotonic() - started
    n = max(1, totals["admitted"])
    return {
        "rate": totals["admitted"] / elapsed,
        "admit_writes": totals["admit_writes"] / n,
        "settle_writes": totals["settle_writes"] / n,
        "refused": totals["refused"],
        "admitted": totals["admitted"],
    }


def exactness(counters: CountersTable, *, requests: int, limit: int, runs: int) -> list[int]:
    """`requests` concurrent admissions against a requests-per-minute limit of `limit`; admitted count per run."""
    results = []
    allowance = Allowance(requests_per_minute=limit, tokens_per_minute=10_000_000, daily_tokens=10**12)
    for _ in range(runs):
        principal = f"key:exact-{uuid.uuid4().hex[:8]}"
        barrier = threading.Barrier(requests)

        def one(_: int, principal: str = principal, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            try:
                counters.admit(principal, allowance, 10)
            except RateLimited:
                return False
            return True

        with concurrent.futures.ThreadPoolExecutor(requests) as pool:
            results.append(sum(pool.map(one, range(requests))))
    return results


def _round_trip_ms(counters: CountersTable, n: int) -> list[float]:
    client, name = counters._ddb, counters._table  # the same client and table, for a baseline
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.update_item(
            TableName=name,
            Key={"pk": {"S": "bench#rtt"}},
            UpdateExpression="SET n = :n",
            ExpressionAttributeValues={":n": {"N": "1"}},
        )
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def run(endpoint: str, table_name: str, seconds: float) -> str:
    counters = CountersTable(_client(endpoint), table_name)
    say("limiter: warming DynamoDB Local's JIT (3 s)")
    throughput(counters, 8, 3.0, hot=False)
    rtt = _round_trip_ms(counters, 300)
    rows = []
    for hot in (False, True):
        for threads in (1, 8, 32):
            say(f"limiter: {threads} thread(s), {'one hot caller' if hot else 'one caller per thread'}")
            r = throughput(counters, threads, seconds, hot=hot)
            rows.append(
                (
                    "one shared caller (hot key)" if hot else "one caller per thread",
                    threads,
                    f"{r['rate']:.0f}",
                    f"{r['admit_writes']:.2f}",
                    f"{r['settle_writes']:.2f}",
                    f"{r['admit_writes'] + r['settle_writes']:.2f}",
                    int(r["refused"]),
                )
            )
    say("limiter: exactness, 100 concurrent against a limit of 5, 5 runs")
    exact = exactness(counters, requests=100, limit=5, runs=5)
    out = [
        "### Limiter (CountersTable.admit + settle, in-process, DynamoDB Local)",
        "",
        table(
            [
                "callers",
                "threads",
                "admissions/s",
                "writes/admission (admit)",
                "writes/admission (settle)",
                "DynamoDB writes per admitted request",
                "refused under contention",
            ],
            rows,
        ),
        "",
        f"DynamoDB Local round trip (one unconditional UpdateItem, 1 thread): p50 {pct(rtt, 50):.2f} ms, "
        f"p99 {pct(rtt, 99):.2f} ms — the engine's own cost, which bounds every figure here.",
        "",
        table(
            ["exactness check", "admitted per run", "target"],
            [("100 concurrent requests, limit 5", ", ".join(map(str, exact)), verdict(all(x == 5 for x in exact)))],
        ),
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput row")
    parser.add_argument("--budgets-only", action="store_true", help="only the budgets section")
    args = parser.parse_args()
    from bulwark_dev.local.dynamodb_local import DynamoDBLocal, create_tables
    from bulwark_dev.local.template_model import load_template

    template = load_template(ROOT / "template.yaml")
    logical = next(k for k in template.table_names if "counter" in k.lower())
    say("limiter: starting DynamoDB Local")
    with DynamoDBLocal(progress=None) as ddb:
        create_tables(ddb.client(), template.tables, template.table_names)
        if not args.budgets_only:
            print(run(ddb.endpoint_url, template.table_names[logical], args.seconds))
            print()
        print(run_budgets(ddb.endpoint_url, template.table_names[logical], args.seconds))


if __name__ == "__main__":
    main()
