"""8 clients through `bulwark local`: latency, throughput and the whole stack's memory under that load.

Written to compare execution models (issue 20): the old worker (16 invocations as threads in one process per
function) against Lambda's (one process per execution environment, one invocation at a time). It relies only on what
both expose (the HTTP API and /proc), so the same file measures either code: run it once with this checkout and once
with ``PYTHONPATH=<other>/layers/bulwark:<other>/devtools`` and ``--project-root <other>`` in the same sitting.

Memory: RSS of the whole stack (this process and every descendant: workers or environments, DynamoDB Local's JVM),
sampled every 0.2 s during the load; the figure is the peak and the value at the end.

Run: `python bench/bench_environments.py [--seconds 20] [--clients 8]`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from _common import ROOT, chat_body, create_key, pct, say, table


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """(RSS KiB summed over `root` and its descendants, number of processes)."""
    total, count, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            count += 1
            todo += _children(pid)
        except OSError:
            continue
    return total, count


def _policy(directory: Path) -> Path:
    from bulwark.policy import default_policy_path

    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["roles"]["developer"]["limits"] = {
        "requests_per_minute": 1_000_000,
        "tokens_per_minute": 100_000_000,
        "daily_tokens": 10**12,
    }
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run(seconds: float, clients: int, root: Path = ROOT) -> dict[str, Any]:
    from bulwark_dev.local.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="bench-env-") as tmp:
        state = Path(tmp)
        stack = LocalStack(
            project_root=root, port=0, state_dir=state, policy_file=_policy(state), progress=None, log_stream=None
        )
        stack.start()
        try:
            return _measure(stack, seconds, clients)
        finally:
            stack.stop()


def _measure(stack: Any, seconds: float, clients: int) -> dict[str, Any]:
    key = create_key(stack.cli_environment(), stack.dynamodb_endpoint, role="developer", name="bench-env")
    url = f"{stack.base_url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = chat_body()
    idle_rss, _ = _tree_rss_kb(os.getpid())
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def client(until: float, record: bool) -> None:
        with requests.Session() as session:
            while time.monotonic() < until:
                started = time.perf_counter()
                status = session.post(url, data=body, headers=headers, timeout=60).status_code
                elapsed = (time.perf_counter() - started) * 1000
                if record:
                    with lock:
                        latencies.append(elapsed)
                        if status != 200:
                            errors.append(status)

    def load(duration: float, record: bool) -> None:
        until = time.monotonic() + duration
        threads = [threading.Thread(target=client, args=(until, record)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    say(f"environments: warm-up, {clients} clients for 5 s")
    load(5.0, record=False)
    peak, samples, processes = 0, [], 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak, processes
        while not sampling.wait(0.2):
            rss, count = _tree_rss_kb(os.getpid())
            peak, processes = max(peak, rss), max(processes, count)
            samples.append(rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    say(f"environments: measuring, {clients} clients for {seconds:.0f} s")
    started = time.monotonic()
    load(seconds, record=True)
    elapsed = time.monotonic() - started
    sampling.set()
    sampler.join()
    end_rss, _ = _tree_rss_kb(os.getpid())
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 50), 2),
        "p99_ms": round(pct(latencies, 99), 2),
        "stack_rss_idle_mb": round(idle_rss / 1024, 1),
        "stack_rss_peak_mb": round(peak / 1024, 1),
        "stack_rss_end_mb": round(end_rss / 1024, 1),
        "processes_peak": processes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--project-root", type=Path, default=ROOT, help="the checkout whose template and handlers run")
    args = parser.parse_args()
    figures = run(args.seconds, args.clients, args.project_root)
    if args.json:
        print(json.dumps({"label": args.label, **figures}))
        return
    print(table(["model", *figures], [[args.label, *figures.values()]]))


if __name__ == "__main__":
    main()
