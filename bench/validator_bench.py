"""Validator latency: parse + validate + sanitize + guardrails + canonical form, printed as markdown tables.

Run: `python bench/validator_bench.py` (`--quick` for fewer runs). Four kinds of text: prose with an email every ~200
characters; numbers, phones, cards, IPs and `key: value` lines; non-ASCII text (French, Japanese, German); application
log lines (what a user pastes to ask what went wrong); and, adversarial, IP addresses one every 8 characters, the
densest findings a text can hold (a placeholder for each).

- The target's table: a typical chat request (~300 B), then the largest requests the default policy admits of each
  kind: a 1 MiB body (max_body_bytes) holding 200,000 characters of message text (max_total_chars), brought to the
  byte cap with JSON \\u escapes, in three shapes: 7 messages of ~28,600 characters (max_message_chars is 32,000),
  64 messages (max_messages), and 64 messages of 4 text parts (max_content_parts is 256).
- Raised caps: a 1 MiB body of plain text (1,000,000 characters, over 32 messages), which needs max_total_chars
  raised tenfold; the cost is linear in the characters, and digit-heavy text costs most. Also the next turn of such a
  conversation, with the earlier messages in the per-caller PII memo.
- The 1 MiB requests stage by stage; then 50,000-character adversarial inputs through the injection detector and the
  PII scanner (inputs built to trigger backtracking in naive patterns).

Wall-clock figures on a shared machine include time other processes take; the CPU column (thread time) does not.
"Before" figures were recorded at commit e742f1c (before the PII scanner, sanitizer and copy-on-change rewrite) on the
same 2-core machine.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

from _common import pct

from bulwark.api.runtime import settle_after_init
from bulwark.guardrails.apply import apply_input_guardrails
from bulwark.guardrails.injection import detect_injection
from bulwark.guardrails.pii import redact_pii
from bulwark.guardrails.pii_memo import PiiMemo
from bulwark.policy import GuardrailPolicy, RequestRules
from bulwark.validation.chat import canonical_json, iter_texts, validate_chat_request
from bulwark.validation.jsonparse import parse_json_body
from bulwark.validation.sanitize import sanitize_chat

POLICY = GuardrailPolicy(prompt_injection="block", pii_input="redact")
BIG_RULES = RequestRules(max_messages=64, max_message_chars=40_000, max_total_chars=2_000_000, max_tokens=4096)
CAP = 1_048_576
PROSE = (
    "The committee reviewed the quarterly figures and asked the team to write to finance@example.com about the "
    "variance in the north region. Revenue rose four percent while costs held steady; the forecast stays unchanged. "
)
MIXED = (
    "Order 48213 shipped on 2024-03-12 to 10.0.4.17; call +1 415-555-0132 or (212) 555-0199 about invoice 7731. "
    "Card 4111 1111 1111 1111 was declined, note: retry tomorrow, status=pending. Totals rose 4.5% to $12,480. "
)
NON_ASCII = (
    "Le comité a examiné les chiffres du trimestre — écrivez à finance@example.fr. 委員会は四半期の数字を確認し、"
    "北部地域の差異について財務部に連絡するよう求めました。Umsatz stieg um 4 % bei gleichbleibenden Kosten. "
)
LOG_LINES = (
    "2024-05-17T12:04:33.512Z INFO  [req 8f3a2c] GET /api/v2/orders?page=3 200 41ms user=u_1842 ip=10.12.4.88 "
    'ua="Mozilla/5.0"\n'
    "2024-05-17T12:04:33.538Z WARN  [req 8f3a2d] POST /api/v2/payments 402 118ms user=u_2207 ip=172.16.9.3 "
    'error="card declined"\n'
)
_rng = random.Random(9)
# Adversarial: an IP address every 8 characters (the densest findings a text can hold), all different.
DENSE_IPS = " ".join(".".join(str(_rng.randrange(10)) for _ in range(4)) for _ in range(2_500)) + " "
BEFORE = {  # recorded at e742f1c: (p50 ms, p99 ms)
    "typical": (0.47, 1.05),
    "max-size": (967.0, 1414.0),
}


def pipeline(body: bytes, rules: RequestRules, memo: PiiMemo | None = None) -> bytes:
    doc = parse_json_body(body, max_bytes=CAP, max_depth=32, max_number_digits=40)
    req = sanitize_chat(validate_chat_request(doc, rules))
    return canonical_json(apply_input_guardrails(req, POLICY, pii_memo=memo, caller="key:bench").request)


def next_turn(body: bytes) -> bytes:
    """The same conversation one turn later: every earlier message again, a new question at the end."""
    doc = json.loads(body)
    doc["messages"] = [*doc["messages"][1:], {"role": "user", "content": "What failed first, and when?"}]
    return json.dumps(doc).encode()


def at_default_caps(paragraph: str, messages: int, parts: int) -> bytes:
    """The largest request the default policy admits, in a given shape: `messages` messages of `parts` text parts each
    (a string content when 1) sharing max_total_chars evenly, each text starting at a different place in `paragraph`;
    the body is brought to the byte cap (max_body_bytes) by writing the first characters as JSON \\u escapes, as any
    client may."""
    rules = RequestRules()
    per_text = min(rules.max_message_chars // parts, rules.max_total_chars // (messages * parts))
    assert messages <= rules.max_messages and messages * parts <= rules.max_content_parts
    texts = []
    for i in range(messages * parts):
        start = i * 7 % len(paragraph)
        rotated = paragraph[start:] + paragraph[:start]
        texts.append((rotated * (per_text // len(rotated) + 1))[:per_text])
    plain = [{"role": "user" if i % 2 == 0 else "assistant",
              "content": texts[i] if parts == 1 else [{"type": "text", "text": t} for t in texts[i * parts:][:parts]]}
             for i in range(messages)]  # fmt: skip
    spare = CAP - len(json.dumps({"model": "demo", "messages": plain}).encode())

    def literal(text: str) -> str:
        nonlocal spare
        out: list[str] = []
        for ch in text:
            plain_ch = json.dumps(ch)[1:-1]
            escaped = f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else plain_ch  # astral ones stay as they are
            grow = len(escaped) - len(plain_ch.encode())
            if 0 < grow <= spare:
                out.append(escaped)
                spare -= grow
            else:
                out.append(plain_ch)
        return '"' + "".join(out) + '"'

    encoded = []
    for i, msg in enumerate(plain):
        if parts == 1:
            content = literal(texts[i])
        else:
            content = (
                "[" + ", ".join(f'{{"type": "text", "text": {literal(t)}}}' for t in texts[i * parts :][:parts]) + "]"
            )
        encoded.append(f'{{"role": "{msg["role"]}", "content": {content}}}')
    body = ('{"model": "demo", "messages": [' + ", ".join(encoded) + "]}").encode()
    assert CAP - 12 <= len(body) <= CAP and json.loads(body)["messages"] == plain
    return body


def typical() -> bytes:
    return json.dumps({
        "model": "demo", "max_tokens": 256, "temperature": 0.2,
        "messages": [{"role": "system", "content": "You are a concise assistant for a retail company."},
                     {"role": "user", "content": "Summarize our return policy for electronics in three bullet points."
                                                 " 30 days with a receipt; opened items incur a 15% fee."}],
    }).encode()  # fmt: skip


def max_size(paragraph: str = PROSE) -> bytes:
    """About 32 messages of `paragraph` repeated, as close to the 1 MiB cap as whole messages allow. Each message
    starts at a different place in the paragraph, so no two messages (or their heads) are the same text and no
    per-text memo can answer for another."""
    msgs: list[dict[str, str]] = []
    while True:
        i = len(msgs)
        start = i * len(paragraph) // 64  # a different place in the paragraph for each of up to 64 messages
        rotated = paragraph[start:] + paragraph[:start]
        content = rotated * (32_000 // len(rotated))
        msg = {"role": "user" if i % 2 == 0 else "assistant", "content": content}
        if len(json.dumps({"model": "demo", "messages": [*msgs, msg]}).encode()) >= CAP:
            break
        msgs.append(msg)
    body = json.dumps({"model": "demo", "messages": msgs}).encode()
    assert len(body) <= CAP and len({m["content"] for m in msgs}) == len(msgs)
    return body


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float, float]:
    """(p50, p99) wall-clock ms and p50 CPU (thread time) ms."""
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    wall.sort()
    return statistics.median(wall), pct(wall, 99), statistics.median(cpu)


ADVERSARIAL: dict[str, tuple[str, float]] = {  # input, PII max ms recorded at e742f1c
    "repeated 'ignore '": ("ignore " * 7_143, 79.7),
    "spaced letters 'a '": ("a " * 25_000, 86.3),
    "'ignore previous ' x N": ("ignore previous " * 3_125, 142.9),
    "base64-looking run": ("aGVsbG8g" * 6_250, 45.1),
    "percent-escapes": ("%41" * 16_667, 99.4),
    "zero-width interleaved": ("i\u200b" * 25_000, 178.9),
    "digits and dashes": ("1-" * 25_000, 142.3),
    "digits and spaces": ("1 " * 25_000, float("nan")),
    "dotted quads": ("1.1.1.1 " * 6_250, float("nan")),
    "'a@' repeated": ("a@" * 25_000, 81.8),
    "emails 'x@y.zz '": ("x@y.zz " * 7_143, float("nan")),
    "colons (IPv6 shape)": ("a:" * 25_000, 50.6),
    "PEM BEGIN repeated": ("-----BEGIN PRIVATE KEY-----" * 1_852, 254.7),
    "'password=' repeated": ("password=" * 5_556, 36.1),
    "'secret:' repeated": ("secret:" * 7_143, float("nan")),
    "'sk-' repeated": ("sk-" * 16_667, float("nan")),
    "'GB00' repeated": ("GB00" * 12_500, float("nan")),
}


def stages(body: bytes, runs: int) -> list[tuple[str, float, float]]:
    """p50 wall and CPU ms of each step of the path for one body."""
    doc = parse_json_body(body, max_bytes=CAP, max_depth=32, max_number_digits=40)
    raw = validate_chat_request(doc, BIG_RULES)
    req = sanitize_chat(raw)
    texts = [text for _role, text in iter_texts(req)]
    steps: list[tuple[str, Callable[[], object]]] = [
        ("parse_json_body", lambda: parse_json_body(body, max_bytes=CAP, max_depth=32, max_number_digits=40)),
        ("validate_chat_request", lambda: validate_chat_request(doc, BIG_RULES)),
        ("sanitize_chat", lambda: sanitize_chat(raw)),
        ("detect_injection (every text)", lambda: [detect_injection(t) for t in texts]),
        ("redact_pii (every text)", lambda: [redact_pii(t) for t in texts]),
        ("canonical_json", lambda: canonical_json(req)),
    ]
    out = []
    for name, fn in steps:
        p50, _p99, cpu = timed(fn, runs)
        out.append((name, p50, cpu))
    return out


TARGET_MS = 50.0
# (messages, text parts each) at the default caps: the fewest and longest texts, the most messages, the most parts.
SHAPES = ((7, 1), (64, 1), (64, 4))
KINDS = {
    "prose + an email every ~200 chars": PROSE,
    "numbers / phones / cards / IPs / key: value": MIXED,
    "non-ASCII (French, Japanese, German)": NON_ASCII,
    "application log lines (timestamps, IPs, paths)": LOG_LINES,
    "adversarial: an IP address every 8 characters": DENSE_IPS,
}


def main() -> None:
    settle_after_init()  # as the validator function does once its init is done (bulwark/runtime.py)
    quick = "--quick" in sys.argv
    big_runs, typ_runs = (5, 300) if quick else (30, 2_000)
    t_body = typical()
    print("Maximum-size requests at the default caps: a 1 MiB body holding 200,000 characters of message text, in the "
          "fewest and longest messages, in the most messages, and in the most parts:\n")  # fmt: skip
    print("| request | body | p50 ms | p99 ms | CPU p50 ms | p99 < 50 ms |")
    print("|---|---:|---:|---:|---:|---|")
    p50, p99, cpu = timed(lambda: pipeline(t_body, RequestRules()), typ_runs)
    print(f"| typical chat request (before: {BEFORE['typical'][0]} / {BEFORE['typical'][1]} ms) | {len(t_body)} B "
          f"| {p50:.3f} | {p99:.3f} | {cpu:.3f} | - |")  # fmt: skip
    worst = 0.0
    for name, paragraph in KINDS.items():
        for messages, parts in SHAPES:
            body = at_default_caps(paragraph, messages, parts)
            # 100 runs: the p99 is then the second slowest, so one stall of this shared VM does not decide it
            p50, p99, cpu = timed(partial(pipeline, body, RequestRules()), 30 if quick else 100)
            worst = max(worst, p99)
            shape = f"{messages} messages" + (f" x {parts} parts" if parts > 1 else "")
            print(f"| {name}, {shape} | {len(body)} B | {p50:.1f} | {p99:.1f} | {cpu:.1f} "
                  f"| {'met' if p99 < TARGET_MS else 'missed'} |")  # fmt: skip
    print(f"\nTarget: a maximum-size request at the configured caps validated and sanitized in under 50 ms p99: "
          f"slowest kind {worst:.1f} ms, {'met' if worst < TARGET_MS else 'missed'}.\n")  # fmt: skip
    print("Raised caps: 1 MiB bodies of plain text, about 1,000,000 characters (max_total_chars raised tenfold):\n")
    bodies = {f"max-size, {name}": max_size(paragraph) for name, paragraph in KINDS.items()}
    print("| request | body | before p50 / p99 ms | p50 ms | p99 ms | CPU p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, (name, body) in enumerate(bodies.items()):
        p50, p99, cpu = timed(partial(pipeline, body, BIG_RULES), big_runs)
        before = "{} / {}".format(*BEFORE["max-size"]) if i == 0 else "-"
        print(f"| {name}, full validator path | {len(body)} B | {before} | {p50:.1f} | {p99:.1f} | {cpu:.1f} |")
    for name in ("max-size, numbers / phones / cards / IPs / key: value", "max-size, application log lines"):
        body = next(b for n, b in bodies.items() if n.startswith(name))
        memo = PiiMemo()
        pipeline(body, BIG_RULES, memo)  # this turn, as the validator container saw it
        turn = next_turn(body)
        p50, p99, cpu = timed(partial(pipeline, turn, BIG_RULES, memo), big_runs)
        print(f"| {name}: the caller's next turn (earlier messages in the PII memo) | {len(turn)} B | - "
              f"| {p50:.1f} | {p99:.1f} | {cpu:.1f} |")  # fmt: skip
    print()
    for name, body in bodies.items():
        print(f"| {name}: step | p50 ms | CPU p50 ms |")
        print("|---|---:|---:|")
        for step, p50, cpu in stages(body, max(3, big_runs // 3)):
            print(f"| {step} | {p50:.2f} | {cpu:.2f} |")
        print()
    print("| 50,000-char adversarial input | injection p50 ms | injection max ms | PII p50 ms | PII max ms "
          "| PII max ms before |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, (raw, before_max) in ADVERSARIAL.items():
        text = raw[:50_000]
        samples = [timed(partial(detect_injection, text), 1)[0] for _ in range(5)]
        i50, imax = statistics.median(samples), max(samples)
        samples = [timed(partial(redact_pii, text), 1)[0] for _ in range(5)]
        p50, pmax = statistics.median(samples), max(samples)
        before = "-" if before_max != before_max else f"{before_max:.1f}"  # NaN: not measured before
        print(f"| {name} | {i50:.1f} | {imax:.1f} | {p50:.1f} | {pmax:.1f} | {before} |")


if __name__ == "__main__":
    main()
