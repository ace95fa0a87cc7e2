"""Full local request path: latency through `bulwark local` minus latency of calling the same demo upstream directly.

Starts the whole stack (DynamoDB Local, one worker process per function, the API Gateway emulator, the demo model)
with a bench policy (the default policy with limits raised so the benchmark never meets a 429), then:

- sequential: N requests through the stack and N straight to the demo model, interleaved, on keep-alive sessions;
  the added latency is p50(stack) - p50(direct) and p99(stack) - p99(direct);
- concurrent: the same with 8 client threads;
- DynamoDB calls per admitted request: the validator audit lines' `store_writes` (admission + settlement), plus the
  authorizer's key reads (at most one per authorizer invocation the gateway did not serve from its cache);
- CPU time per request of the handler processes: utime+stime from /proc/<pid>/stat of the three workers, before and
  after the measured requests (the gateway emulator and DynamoDB Local are not handler time);
- peak RSS of each worker (`GET /__bulwark/stats`, VmHWM) after the load.

Run: `python bench/bench_local_path.py [--n 300]`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from _common import ROOT, chat_body, create_key, pct, say, table, verdict

CLK_TCK = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 8


def bench_policy(directory: Path) -> Path:
    """The shipped policy with every developer limit raised, so the figures measure the path, not the limiter."""
    doc = yaml.safe_load((ROOT / "layers/bulwark/bulwark/policy.yaml").read_text())
    doc["roles"]["developer"]["limits"] = {
        "requests_per_minute": 1_000_000,
        "tokens_per_minute": 1_000_000_000,
        "daily_tokens": 10_000_000_000,
    }
    path = directory / "bench-policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class _Capture(io.StringIO):
    """Discards the stack's console lines (the JSONL log file keeps them)."""

    def write(self, text: str) -> int:
        return len(text)


def _pool_cpu_seconds(stack: Any, logical_id: str) -> dict[int, float]:
    """CPU seconds of each live environment of a function, by pid (an environment started later counts from 0)."""
    return {int(pid): _cpu_seconds(int(pid)) for pid in stack.worker_stats()[logical_id]["pids"]}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def _timed_posts(url: str, body: bytes, headers: dict[str, str], n: int, ids: list[str] | None) -> list[float]:
    samples: list[float] = []
    with requests.Session() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            resp = session.post(url, data=body, headers=headers, timeout=30)
            samples.append((time.perf_counter() - t0) * 1000)
            if resp.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status_code} {resp.text[:200]}")
            if ids is not None:
                ids.append(resp.headers.get("x-request-id", ""))
    return samples


def _concurrent(url: str, body: bytes, headers: dict[str, str], n: int, ids: list[str] | None) -> list[float]:
    per = n // CONCURRENCY
    lock = threading.Lock()
    out: list[float] = []

    def client(_: int) -> None:
        local_ids: list[str] | None = [] if ids is not None else None
        samples = _timed_posts(url, body, headers, per, local_ids)
        with lock:
            out.extend(samples)
            if ids is not None and local_ids is not None:
                ids.extend(local_ids)

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(client, range(CONCURRENCY)))
    return out


def _read_log(log_file: Path, ids: set[str], seq_ids: set[str]) -> dict[str, Any]:
    """Store writes per admitted request (audit lines), authorizer invocations, and a per-hop latency breakdown."""
    writes: list[int] = []
    authorizer_calls = 0
    requests_seen = 0
    hops: dict[str, list[float]] = {"gateway total": [], "authorizer invoke": [], "validator integration": []}
    hops |= {"validator handler": [], "invoker upstream call": []}
    for line in log_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        audit = rec.get("audit")
        if isinstance(audit, dict) and audit.get("request_id") in ids and audit.get("status") == 200:
            writes.append(int(audit.get("store_writes", 0)))
            if audit["request_id"] in seq_ids:
                hops["validator handler"].append(float(audit.get("latency_ms", 0)))
                hops["invoker upstream call"].append(float(audit.get("upstream_ms", 0)))
        if rec.get("function_name") == "api-gateway" and rec.get("requestId") in ids:
            requests_seen += 1
            if rec.get("authorizer") == "called":
                authorizer_calls += 1
            if rec["requestId"] in seq_ids:
                hops["gateway total"].append(float(rec.get("latencyMs", 0)))
                hops["authorizer invoke"].append(float(rec.get("authorizerLatencyMs", 0)))
                hops["validator integration"].append(float(rec.get("integrationLatencyMs", 0)))
    return {
        "writes": sum(writes) / len(writes) if writes else float("nan"),
        "authorizer_calls": authorizer_calls / max(1, requests_seen),
        "audited": len(writes),
        "hops": hops,
    }


def run(n: int) -> str:
    from bulwark_dev.local.stack import LocalStack

    tmp = Path(tempfile.mkdtemp(prefix="bulwark-bench-path-"))
    say("local path: starting the local stack")
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        policy_file=bench_policy(tmp),
        state_dir=tmp / "state",
        progress=None,
        log_stream=_Capture(),
    )
    stack.start()
    try:
        return _measure(stack, n)
    finally:
        say("local path: stopping the local stack")
        stack.stop()


def _measure(stack: Any, n: int) -> str:
    key = create_key(stack.cli_environment(), stack.dynamodb_endpoint, role="developer", name="bench-path")
    body = chat_body()
    via = f"{stack.base_url}/v1/chat/completions"
    via_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # What the invoker sends the demo model: the canonical request with the upstream's model name.
    direct = f"{stack.demo_model_url}/chat/completions"
    direct_headers = {"Content-Type": "application/json", "Accept": "application/json"}

    say("local path: warming up (JIT of DynamoDB Local, pools, caches)")
    _concurrent(via, body, via_headers, 200, None)
    _timed_posts(direct, body, direct_headers, 50, None)

    # Each function runs in as many execution environments (processes) as its concurrency needs.
    handler_names = [k for k in stack.worker_stats() if "janitor" not in k.lower()]
    cpu_before = {k: _pool_cpu_seconds(stack, k) for k in handler_names}
    handler_cpu_before = {k: float(s.get("handler_cpu_ms", 0.0)) for k, s in stack.worker_stats().items()}
    started = time.monotonic()
    ids: list[str] = []

    say(f"local path: sequential, {n} through the stack and {n} direct (interleaved in blocks)")
    seq_via: list[float] = []
    seq_direct: list[float] = []
    block = 25
    for _ in range(max(1, n // block)):
        seq_via += _timed_posts(via, body, via_headers, block, ids)
        seq_direct += _timed_posts(direct, body, direct_headers, block, None)
    say(f"local path: {CONCURRENCY} concurrent clients, {n} requests each way")
    con_via = _concurrent(via, body, via_headers, n, ids)
    con_direct = _concurrent(direct, body, direct_headers, n, None)

    cpu_after = {k: _pool_cpu_seconds(stack, k) for k in handler_names}
    elapsed = time.monotonic() - started
    measured = len(ids)
    cpu_ms = {
        k: sum(after - cpu_before[k].get(pid, 0.0) for pid, after in cpu_after[k].items()) * 1000 / measured
        for k in handler_names
    }
    stats = stack.worker_stats()
    handler_cpu = {
        k: (float(stats[k].get("handler_cpu_ms", 0.0)) - handler_cpu_before.get(k, 0.0)) / measured
        for k in handler_names
    }
    time.sleep(0.5)  # let the last log lines reach the file
    log_file = stack.log_file
    assert log_file is not None
    seq_ids = set(ids[: len(seq_via)])
    facts = _read_log(log_file, set(ids), seq_ids)
    writes, audited = facts["writes"], facts["audited"]
    # The authorizer keeps each decision 10 s in memory (bulwark.auth.decision.CACHE_SECONDS): one key read per key
    # per container per 10 s at most, whatever the gateway's own cache does.
    from bulwark.auth.decision import CACHE_SECONDS

    auth_reads = min(facts["authorizer_calls"], (elapsed // CACHE_SECONDS + 1) / measured)
    hop_rows = [(hop, f"{pct(v, 50):.2f}", f"{pct(v, 99):.2f}") for hop, v in facts["hops"].items() if v]

    rows = []
    figures: dict[str, tuple[float, float]] = {}
    for label, via_s, direct_s in (
        ("sequential", seq_via, seq_direct),
        (f"{CONCURRENCY} concurrent clients", con_via, con_direct),
    ):
        add50 = pct(via_s, 50) - pct(direct_s, 50)
        add99 = pct(via_s, 99) - pct(direct_s, 99)
        figures[label] = (add50, add99)
        rows.append(
            (
                label,
                len(via_s),
                f"{pct(direct_s, 50):.2f}",
                f"{pct(direct_s, 99):.2f}",
                f"{pct(via_s, 50):.2f}",
                f"{pct(via_s, 99):.2f}",
                f"**{add50:.2f}**",
                f"**{add99:.2f}**",
            )
        )
    total_cpu = sum(cpu_ms.values())
    total_handler_cpu = sum(handler_cpu.values())
    mem_rows = [
        (
            logical,
            stats[logical]["pid"],
            f"{stats[logical]['peak_rss_kb'] / 1024:.1f}",
            f"{stats[logical]['rss_kb'] / 1024:.1f}",
            f"{cpu_ms[logical]:.2f}" if logical in cpu_ms else "-",
            f"{handler_cpu[logical]:.2f}" if logical in handler_cpu else "-",
            stats[logical]["invocations"],
        )
        for logical in stats
    ]
    seq = figures["sequential"]
    peak = max((d["peak_rss_kb"] for s in stats.values() for d in s["detail"]), default=0) / 1024  # per process
    dynamo_calls = writes + auth_reads
    targets = [
        ("added latency, sequential, p50 <= 10 ms", f"{seq[0]:.2f} ms", verdict(seq[0] <= 10)),
        ("added latency, sequential, p99 <= 25 ms", f"{seq[1]:.2f} ms", verdict(seq[1] <= 25)),
        ("DynamoDB calls per admitted request <= 3", f"{dynamo_calls:.2f}", verdict(dynamo_calls <= 3)),
        (
            "handler CPU per request < 5 ms (3 handlers, handler code)",
            f"{total_handler_cpu:.2f} ms",
            verdict(total_handler_cpu < 5),
        ),
        ("peak RSS per handler process <= 128 MB", f"{peak:.1f} MB", verdict(peak <= 128)),
    ]
    return "\n".join(
        [
            "### Full local path: `bulwark local` vs calling the demo upstream directly (POST /v1/chat/completions)",
            "",
            table(
                [
                    "clients",
                    "requests",
                    "direct p50 ms",
                    "direct p99 ms",
                    "via Bulwark p50 ms",
                    "via Bulwark p99 ms",
                    "added p50 ms",
                    "added p99 ms",
                ],
                rows,
            ),
            "",
            f"DynamoDB calls per admitted request: {writes:.2f} writes (admission + settlement, from {audited} audit "
            f"lines) + at most {auth_reads:.3f} authorizer key reads (the authorizer ran on "
            f"{facts['authorizer_calls']:.0%} of requests; its 10 s decision cache reads each key at most once per "
            f"10 s: <= {elapsed // CACHE_SECONDS + 1:.0f} reads in {elapsed:.0f} s) = **{dynamo_calls:.2f}**.",
            "",
            "Where the time goes (sequential requests, from the gateway access log and the validator audit lines):",
            "",
            table(["hop", "p50 ms", "p99 ms"], hop_rows),
            "",
            table(
                [
                    "function",
                    "pid",
                    "peak RSS MB",
                    "RSS now MB",
                    "process CPU ms / request",
                    "handler CPU ms / request",
                    "invocations",
                ],
                mem_rows,
            ),
            "",
            f"CPU per request, three handlers together: **{total_handler_cpu:.2f} ms** in the handler code (thread CPU "
            f"of each invocation, what Lambda bills for), **{total_cpu:.2f} ms** for the whole worker processes "
            f"(utime+stime, clock tick {1000 / CLK_TCK:.0f} ms, over {measured} requests), the difference being the "
            "local emulation of Lambda's invoke transport (HTTP server, JSON, log pipes).",
            "",
            table(["target", "measured", ""], targets),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="requests per row and direction")
    args = parser.parse_args()
    print(run(args.n))


if __name__ == "__main__":
    main()
