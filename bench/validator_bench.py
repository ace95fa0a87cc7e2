"""Validator latency: parse + validate + sanitize + guardrails, printed as a markdown table.

Run: `python bench/validator_bench.py`. Rows: a typical chat request (~1 KB), a maximum-size request (1 MiB body of
realistic prose spread over messages, caps raised to admit it), and 50,000-character adversarial inputs through the
injection detector and the PII scanner (inputs built to trigger backtracking in naive patterns).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from bulwark.guardrails.apply import apply_input_guardrails
from bulwark.guardrails.injection import detect_injection
from bulwark.guardrails.pii import redact_pii
from bulwark.policy import GuardrailPolicy, RequestRules
from bulwark.validation.chat import canonical_json, validate_chat_request
from bulwark.validation.jsonparse import parse_json_body
from bulwark.validation.sanitize import sanitize_chat

POLICY = GuardrailPolicy(prompt_injection="block", pii_input="redact")
BIG_RULES = RequestRules(max_messages=64, max_message_chars=40_000, max_total_chars=2_000_000, max_tokens=4096)
PROSE = (
    "The committee reviewed the quarterly figures and asked the team to write to finance@example.com about the "
    "variance in the north region. Revenue rose four percent while costs held steady; the forecast stays unchanged. "
)


def pipeline(body: bytes, rules: RequestRules) -> bytes:
    doc = parse_json_body(body, max_bytes=1_048_576, max_depth=32, max_number_digits=40)
    req = sanitize_chat(validate_chat_request(doc, rules))
    return canonical_json(apply_input_guardrails(req, POLICY).request)


def typical() -> bytes:
    return json.dumps({
        "model": "demo", "max_tokens": 256, "temperature": 0.2,
        "messages": [{"role": "system", "content": "You are a concise assistant for a retail company."},
                     {"role": "user", "content": "Summarize our return policy for electronics in three bullet points."
                                                 " 30 days with a receipt; opened items incur a 15% fee."}],
    }).encode()  # fmt: skip


def max_size() -> bytes:
    msgs = [{"role": "user", "content": ""}] * 0
    per_msg = PROSE * (32_000 // len(PROSE))
    while len(json.dumps({"model": "demo", "messages": [*msgs, {"role": "user", "content": per_msg}]})) < 1_040_000:
        msgs.append({"role": "user" if len(msgs) % 2 == 0 else "assistant", "content": per_msg})
    body = json.dumps({"model": "demo", "messages": msgs}).encode()
    assert len(body) <= 1_048_576
    return body


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


ADVERSARIAL: dict[str, str] = {
    "repeated 'ignore '": "ignore " * 7_143,
    "spaced letters 'a '": "a " * 25_000,
    "'ignore previous ' x N": "ignore previous " * 3_125,
    "base64-looking run": "aGVsbG8g" * 6_250,
    "percent-escapes": "%41" * 16_667,
    "zero-width interleaved": "i\u200b" * 25_000,
    "digits and dashes": "1-" * 25_000,
    "'a@' repeated": "a@" * 25_000,
    "colons (IPv6 shape)": "a:" * 25_000,
    "PEM BEGIN repeated": "-----BEGIN PRIVATE KEY-----" * 1_852,
    "'password=' repeated": "password=" * 5_556,
}


def main() -> None:
    t_body, m_body = typical(), max_size()
    print("| case | body | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    p50, p99 = timed(lambda: pipeline(t_body, RequestRules()), 2_000)
    print(f"| typical chat request, full validator path | {len(t_body)} B | {p50:.3f} | {p99:.3f} |")
    p50, p99 = timed(lambda: pipeline(m_body, BIG_RULES), 30)
    print(f"| max-size chat request (1 MiB), full validator path | {len(m_body)} B | {p50:.1f} | {p99:.1f} |")
    print()
    print("| 50,000-char adversarial input | injection p50 ms | injection max ms | PII p50 ms | PII max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, raw in ADVERSARIAL.items():
        text = raw[:50_000]
        i50, imax = timed(lambda: detect_injection(text), 5)  # noqa: B023 - called before the loop moves on
        p50, pmax = timed(lambda: redact_pii(text), 5)  # noqa: B023
        print(f"| {name} | {i50:.1f} | {imax:.1f} | {p50:.1f} | {pmax:.1f} |")


if __name__ == "__main__":
    main()
