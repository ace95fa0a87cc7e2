"""The soak (issue 21): N clients for T seconds of mixed traffic through `bulwark local`, then every account checked.

The traffic, the checks and their reasons are in `bulwark_dev.soak`; this script starts a stack of its own (the
soak policy: an open role, a tight role for 429s), runs it and prints the checks and figures as markdown. Loopback
only. Exit status 1 when a check fails.

Run: `python bench/soak.py [--clients 16] [--seconds 60] [--warmup 10]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, say, table

from bulwark_dev import soak
from bulwark_dev.local.stack import LocalStack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        state = Path(tmp)
        stack = LocalStack(
            project_root=ROOT,
            port=0,
            state_dir=state,
            policy_file=soak.soak_policy(state),
            progress=None,
            log_stream=None,
        )
        stack.start()
        try:
            say(f"soak: {args.clients} clients for {args.warmup:.0f} s warm-up + {args.seconds:.0f} s")
            result = soak.run(stack, clients=args.clients, seconds=args.seconds, warmup=args.warmup)
        finally:
            stack.stop()
    f = result.figures
    print(f"### Soak: {args.clients} clients x {args.seconds:.0f} s (+{args.warmup:.0f} s warm-up), mixed traffic\n")
    print(
        table(
            ["requests", "req/s", "p50 ms", "p99 ms", "tokens billed", "audit chains", "environments", "stack RSS MB"],
            [
                [
                    f["requests"],
                    f["throughput_rps"],
                    f["latency_ms_p50"],
                    f["latency_ms_p99"],
                    f["tokens_billed"],
                    f["audit_chains"],
                    f["environments"],
                    f["rss_mb_total"],
                ]
            ],
        )
    )
    print("\nBy kind: " + ", ".join(f"{k} {v}" for k, v in sorted(f["by_kind"].items())))
    print("By status: " + ", ".join(f"{k}: {v}" for k, v in f["by_status"].items()) + "\n")
    print(
        table(
            ["check", "result", "detail"],
            [[n, "ok" if ok else "**FAILED**", d] for n, (ok, d) in result.checks.items()],
        )
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
