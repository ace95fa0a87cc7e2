"""Streaming through `bulwark local` (issue 18): what Bulwark adds to a stream, against the same demo model called
directly, with the model writing one token every 20 ms.

- added time to first token (p50, p99): first content chunk through the stack minus first content chunk direct, for
  the developer role as shipped (output PII redaction: the hold-back window) and for a role with output filtering off;
- added inter-token gap (p50, p99): gaps between content chunks through the stack minus gaps direct;
- the non-streaming path's added latency in the same sitting (the target for time to first token is that + 5 ms);
- memory over a long stream: the validator's and invoker's resident set sampled while one stream runs
  (`--long-seconds`, 600 for the full 10 minutes; the quick run uses 60).

Run: `python bench/bench_streaming.py [--n 30] [--long-seconds 600]`.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from _common import ROOT, create_key, pct, say, table, verdict
from bench_local_path import _Capture, _timed_posts, bench_policy

TOKEN_DELAY = 0.020
PROMPT = " ".join(f"t{i}" for i in range(40))  # the echo: ~46 tokens, ~1 s at 20 ms each


def _policy(directory: Path) -> Path:
    path = bench_policy(directory)
    doc = yaml.safe_load(path.read_text())
    off = dict(doc["roles"]["developer"])
    off["guardrails"] = {**off.get("guardrails", {}), "pii_output": "off"}
    doc["roles"]["stream-unfiltered"] = off
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _has_content(event: bytes) -> bool:
    if not event.startswith(b"data: {"):
        return False
    chunk = json.loads(event[6:])
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def _stream(url: str, headers: dict[str, str], body: bytes) -> tuple[float, list[float], int]:
    """(ms to the first content chunk, ms between content chunks, bytes) of one streamed request, read as curl -N."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    started = time.perf_counter()
    conn.request("POST", parts.path, body=body, headers=headers)
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{url}: HTTP {response.status} {response.read()[:200]!r}")
    arrivals: list[float] = []
    size = 0
    pending = b""
    while piece := response.read1(65536):
        now = time.perf_counter()
        size += len(piece)
        pending += piece
        *events, pending = pending.split(b"\n\n")
        arrivals.extend(now for e in events if _has_content(e))
    conn.close()
    ms = [(t - started) * 1000 for t in arrivals]
    return ms[0], [b - a for a, b in itertools.pairwise(ms)], size


def run(n: int, long_seconds: float) -> str:
    from bulwark_dev.local.stack import LocalStack

    tmp = Path(tempfile.mkdtemp(prefix="bulwark-bench-stream-"))
    say("streaming: starting the local stack")
    stack = LocalStack(
        project_root=ROOT,
        port=0,
        policy_file=_policy(tmp),
        state_dir=tmp / "state",
        progress=None,
        log_stream=_Capture(),
    )
    stack.start()
    try:
        return _measure(stack, n, long_seconds)
    finally:
        say("streaming: stopping the local stack")
        stack.stop()


def _measure(stack: Any, n: int, long_seconds: float) -> str:
    env, ddb = stack.cli_environment(), stack.dynamodb_endpoint
    keys = {
        "redact (shipped)": create_key(env, ddb, role="developer", name="bench-stream"),
        "off": create_key(env, ddb, role="stream-unfiltered", name="bench-stream-off"),
    }
    body = json.dumps({"model": "demo-echo", "messages": [{"role": "user", "content": PROMPT}], "stream": True})
    via = f"{stack.base_url}/v1/chat/completions"
    direct = f"{stack.demo_model_url}/chat/completions"
    json_headers = {"Content-Type": "application/json"}
    demo = stack.demo_server
    demo.token_delay = TOKEN_DELAY

    say("streaming: warm-up")
    for key in keys.values():
        for _ in range(3):
            _stream(via, {**json_headers, "Authorization": f"Bearer {key}"}, body.encode())
    _stream(direct, json_headers, body.encode())

    rows = []
    ttft_added: dict[str, float] = {}
    say(f"streaming: {n} streams per mode through the stack, {n} direct, interleaved")
    direct_first: list[float] = []
    direct_gaps: list[float] = []
    via_first: dict[str, list[float]] = {mode: [] for mode in keys}
    via_gaps: dict[str, list[float]] = {mode: [] for mode in keys}
    for _ in range(n):
        first, gaps, _size = _stream(direct, json_headers, body.encode())
        direct_first.append(first)
        direct_gaps.extend(gaps)
        for mode, key in keys.items():
            first, gaps, _size = _stream(via, {**json_headers, "Authorization": f"Bearer {key}"}, body.encode())
            via_first[mode].append(first)
            via_gaps[mode].extend(gaps)
    for mode in keys:
        ttft_added[mode] = pct(via_first[mode], 50) - pct(direct_first, 50)
        rows.append(
            [
                mode,
                f"{pct(direct_first, 50):.1f} / {pct(direct_first, 99):.1f}",
                f"{pct(via_first[mode], 50):.1f} / {pct(via_first[mode], 99):.1f}",
                f"{ttft_added[mode]:+.1f} / {pct(via_first[mode], 99) - pct(direct_first, 99):+.1f}",
                f"{statistics.median(direct_gaps):.2f}",
                f"{statistics.median(via_gaps[mode]):.2f}",
                f"{statistics.median(via_gaps[mode]) - statistics.median(direct_gaps):+.2f}"
                f" / {pct(via_gaps[mode], 99) - pct(direct_gaps, 99):+.2f}",
            ]
        )

    say("streaming: the non-streaming path, same sitting")
    demo.token_delay = 0.0
    plain = json.dumps({"model": "demo-echo", "messages": [{"role": "user", "content": PROMPT}]}).encode()
    key = keys["off"]
    plain_via: list[float] = []
    plain_direct: list[float] = []
    for _ in range(max(10, n)):
        plain_via += _timed_posts(via, plain, {**json_headers, "Authorization": f"Bearer {key}"}, 5, None)
        plain_direct += _timed_posts(direct, plain, json_headers, 5, None)
    plain_added = pct(plain_via, 50) - pct(plain_direct, 50)

    say(f"streaming: one long stream, {long_seconds:.0f} s, memory sampled")
    demo.token_delay = TOKEN_DELAY
    demo.repeat = max(1, int(long_seconds / TOKEN_DELAY / 46) + 1)
    samples = _long_stream(stack, via, keys["redact (shipped)"], body.encode(), long_seconds)
    demo.repeat = 1

    out = [
        f"Upstream: the demo model, one token every {TOKEN_DELAY * 1000:.0f} ms, {len(PROMPT.split()) + 6} tokens"
        f" per stream; {n} streams per mode, read as `curl -N` does. Times in ms (p50 / p99).",
        "",
        table(
            [
                "output filter",
                "first token direct",
                "first token via Bulwark",
                "added",
                "gap direct p50",
                "gap via p50",
                "added gap p50 / p99",
            ],
            rows,
        ),
        "",
        f"Non-streaming path, same sitting: added latency p50 {plain_added:.1f} ms"
        f" (via {pct(plain_via, 50):.1f}, direct {pct(plain_direct, 50):.1f}; {len(plain_via)} requests).",
        "",
        "Targets (issue 18): added time to first token <= non-streaming added latency + 5 ms "
        f"(filter off: {ttft_added['off']:+.1f} vs {plain_added + 5:.1f}: "
        f"{verdict(ttft_added['off'] <= plain_added + 5)}); added inter-token gap p50 < 2 ms "
        f"({verdict(all(statistics.median(via_gaps[m]) - statistics.median(direct_gaps) < 2 for m in keys))}).",
        "",
        _memory_table(samples, long_seconds),
    ]
    return "\n".join(out)


def _long_stream(stack: Any, url: str, key: str, body: bytes, seconds: float) -> list[tuple[float, dict[str, int]]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    conn.request(
        "POST", parts.path, body=body, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    )
    response = conn.getresponse()
    started = time.monotonic()
    next_sample = started
    samples: list[tuple[float, dict[str, int]]] = []
    received = 0
    while time.monotonic() - started < seconds:
        piece = response.read1(65536)
        if not piece:
            break
        received += len(piece)
        if time.monotonic() >= next_sample:
            stats = stack.worker_stats()
            rss = {k: int(v["rss_kb"]) for k, v in stats.items() if "janitor" not in k.lower()}
            rss["received_kb"] = received // 1024
            samples.append((time.monotonic() - started, rss))
            next_sample += max(1.0, seconds / 20)
    conn.close()
    return samples


def _memory_table(samples: list[tuple[float, dict[str, int]]], seconds: float) -> str:
    if len(samples) < 2:
        return "Memory over a long stream: not measured (too few samples)."
    names = [k for k in samples[0][1] if k != "received_kb"]
    rows = [
        [f"{t:.0f}", *(f"{r[k] / 1024:.1f}" for k in names), f"{r['received_kb']}"]
        for t, r in samples[:: max(1, len(samples) // 8)]
    ]
    first, last = samples[1][1], samples[-1][1]  # from the second sample: the first is taken as the stream opens
    growth = {k: (last[k] - first[k]) / 1024 for k in names}
    flat = all(abs(g) < 2.0 for g in growth.values())
    return "\n".join(
        [
            f"Memory over one {seconds:.0f} s stream (RSS in MiB of each worker; received = KiB at the client):",
            "",
            table(["s", *names, "received KiB"], rows),
            "",
            "Growth from the second sample to the last: "
            + ", ".join(f"{k} {g:+.2f} MiB" for k, g in growth.items())
            + f" (flat, under 2 MiB: {verdict(flat)}).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--long-seconds", type=float, default=600.0)
    args = parser.parse_args()
    print(run(args.n, args.long_seconds))


if __name__ == "__main__":
    main()
