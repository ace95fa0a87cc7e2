"""What the limiter's exactness tests share: N threads released at once against the same limit, and a fake clock.

The clock runs in 2032 (a whole number of days after 2023-11-14, so times of day are unchanged): an item's TTL
(expires_at) must lie ahead of DynamoDB Local's TTL sweeper, which deletes expired items within about a second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bulwark.errors import RateLimited

T0 = 1_700_000_000_000 + 3_000 * 86_400_000


def race(n: int, fn: Callable[[int], Any]) -> tuple[list[Any], list[RateLimited]]:
    """Run fn(0..n-1) on n threads released together; the answers, and the refusals, in arrival order."""
    barrier = threading.Barrier(n)
    ok: list[Any] = []
    refused: list[RateLimited] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            result = fn(i)
        except RateLimited as exc:
            with lock:
                refused.append(exc)
        else:
            with lock:
                ok.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return ok, refused
