"""Precision and recall of the PII and secret detector per kind, on a generated set and on hard negatives.

Values come from Faker (several locales: phones, IBANs, SSNs, emails, cards) or from generators written here for the
shapes Faker does not make (UK NI numbers with allocated prefixes, AWS keys, JWTs, private-key blocks, API tokens),
each set inside carrier sentences as people paste them into prompts and as a model writes them in answers. Hard
negatives are look-alikes that must not be redacted: order numbers, timestamps, version strings, hashes, UUIDs, ISBNs,
tracking numbers, prices, dates after a phone cue.

Recall: planted values whose whole span lies inside a finding of the same kind. Precision: findings of a kind that
overlap a planted value of that kind, over all findings of that kind (in the positives and in the hard negatives).
Needs Faker (`pip install faker` into the bench venv, not the project's). Run: `python bench/pii_eval.py [--n 150]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bulwark.guardrails.pii import find_pii

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "ja_JP", "en_IN")

PROMPT_CARRIERS = (
    "Hi, my {label} is {v}, please update the record.",
    "{label}: {v}",
    "Can you format this for the CRM? Name: Ana Ruiz, {label} {v}, notes: VIP.",
    "I pasted the config below\n\n{v}\n\nwhy does it fail?",
    "Please write a polite email to the customer ({v}) about the delay.",
)
OUTPUT_CARRIERS = (
    "Sure! The customer's {label} on file is {v}.",
    "Here is the summary:\n- Contact: {v}\n- Status: pending",
)
PHONE_CUE_CARRIERS = (
    "call me at {v} after 6",
    "You can reach me at {v} tomorrow.",
    "Tel: {v}",
    "text me on {v} when you land",
    "my mobile is {v}",
)


@dataclass
class Sample:
    text: str
    kind: str | None  # the planted kind (None: a hard negative)
    span: tuple[int, int] | None
    family: str  # what generated it (locale, shape or negative family)


def _place(template: str, value: str, label: str) -> tuple[str, tuple[int, int]]:
    head, tail = template.split("{v}")
    head = head.replace("{label}", label)
    tail = tail.replace("{label}", label)
    return head + value + tail, (len(head), len(head) + len(value))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _nino(rng: random.Random) -> str:
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    while first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    digits = [f"{rng.randrange(100):02d}" for _ in range(3)]
    sep = rng.choice(("", " "))
    return first + second + sep + sep.join(digits) + sep + rng.choice("ABCD")


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits


def _api_token(rng: random.Random) -> str:
    return rng.choice(
        (
            "sk-proj-" + _rand(rng, ALNUM + "_-", 48),
            "sk-ant-api03-" + _rand(rng, ALNUM + "_-", 40),
            "ghp_" + _rand(rng, ALNUM, 36),
            "github_pat_" + _rand(rng, ALNUM + "_", 60),
            "xoxb-" + _rand(rng, string.digits, 12) + "-" + _rand(rng, ALNUM, 24),
            "AIza" + _rand(rng, ALNUM + "_-", 35),
            "glpat-" + _rand(rng, ALNUM + "_-", 20),
            "hf_" + _rand(rng, ALNUM, 34),
            "npm_" + _rand(rng, ALNUM, 36),
            "sk_live_" + _rand(rng, ALNUM, 24),
        )
    )


def _jwt(rng: random.Random) -> str:
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": _rand(rng, ALNUM, 8)}).encode())
    claims = {"sub": _rand(rng, string.digits, 10), "iat": rng.randrange(1_600_000_000, 1_800_000_000)}
    payload = _b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{_b64url(rng.randbytes(64))}"


def _private_key(rng: random.Random) -> str:
    label = rng.choice(("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"))
    body = base64.b64encode(rng.randbytes(rng.randrange(120, 600))).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"


def positives(n: int, seed: int) -> list[Sample]:
    from faker import Faker

    rng = random.Random(seed)
    out: list[Sample] = []

    def add(kind: str, family: str, label: str, make: Callable[[], str], carriers: tuple[str, ...]) -> None:
        for i in range(n):
            text, span = _place(carriers[i % len(carriers)], make(), label)
            out.append(Sample(text, kind, span, family))

    per_locale = max(10, n // 4)
    for loc in LOCALES:
        fake = Faker(loc)
        fake.seed_instance(seed)
        for i in range(per_locale):
            carriers = PROMPT_CARRIERS + OUTPUT_CARRIERS
            text, span = _place(carriers[i % len(carriers)], fake.phone_number(), "phone number")
            out.append(Sample(text, "phone", span, f"phone {loc}"))
            bare = "".join(c for c in fake.phone_number().split("x")[0] if c.isdigit())
            text, span = _place(PHONE_CUE_CARRIERS[i % len(PHONE_CUE_CARRIERS)], bare, "")
            out.append(Sample(text, "phone", span, f"phone {loc} digits after a cue"))
            text, span = _place(carriers[i % len(carriers)], fake.iban(), "IBAN")
            out.append(Sample(text, "iban", span, f"iban {loc}"))
        emails = [fake.email() for _ in range(per_locale // 2)]
        for i, e in enumerate(emails):
            text, span = _place(PROMPT_CARRIERS[i % len(PROMPT_CARRIERS)], e, "email")
            out.append(Sample(text, "email", span, f"email {loc}"))
    us = Faker("en_US")
    us.seed_instance(seed)
    add("us_ssn", "us_ssn en_US", "SSN", us.ssn, PROMPT_CARRIERS + OUTPUT_CARRIERS)
    add("payment_card", "card (Faker)", "card", us.credit_card_number, PROMPT_CARRIERS + OUTPUT_CARRIERS)
    add("uk_nino", "uk_nino (generated)", "NI number", lambda: _nino(rng), PROMPT_CARRIERS + OUTPUT_CARRIERS)
    aws_id = lambda: rng.choice(("AKIA", "ASIA")) + _rand(rng, string.ascii_uppercase + "234567", 16)  # noqa: E731
    add("aws_access_key_id", "aws key id", "access key", aws_id, PROMPT_CARRIERS)
    secret_carriers = (
        "aws_secret_access_key = {v}",
        "AWS_SECRET_ACCESS_KEY={v}\nAWS_DEFAULT_REGION=eu-west-1",
        '{"aws_secret_access_key": "{v}"}',
        "secret: {v}",
    )
    secret = lambda: _rand(rng, ALNUM + "/+", 39) + rng.choice(string.digits)  # noqa: E731
    add("aws_secret_access_key", "aws secret", "", secret, secret_carriers)
    add("private_key", "PEM block", "key", lambda: _private_key(rng), (*PROMPT_CARRIERS[3:4], "key:\n{v}"))
    add("jwt", "JWT", "token", lambda: _jwt(rng), PROMPT_CARRIERS + OUTPUT_CARRIERS)
    add("api_token", "API tokens (10 shapes)", "API key", lambda: _api_token(rng), PROMPT_CARRIERS + OUTPUT_CARRIERS)
    return out


def negatives(n: int, seed: int) -> list[Sample]:
    from faker import Faker

    rng = random.Random(seed + 1)
    fake = Faker("en_US")
    fake.seed_instance(seed + 1)
    families: dict[str, Callable[[], str]] = {
        "order numbers": lambda: (
            f"Order #{rng.randrange(10**7, 10**12)} shipped; invoice INV-2024-{rng.randrange(10**6):06d}"
        ),
        "timestamps": lambda: rng.choice(
            (
                fake.date_time().isoformat(),
                f"{fake.date_time():%Y-%m-%d %H:%M:%S},{rng.randrange(1000):03d} INFO worker started",
                f"ts={rng.randrange(1_500_000_000, 1_800_000_000)}",
                f"{rng.randrange(1_500_000_000_000, 1_800_000_000_000)} ms since epoch",
            )
        ),
        "version strings": lambda: rng.choice(
            (
                f"v{rng.randrange(20)}.{rng.randrange(40)}.{rng.randrange(100)}",
                f"Windows 10.0.{rng.randrange(10000, 30000)}.{rng.randrange(1000, 9999)}",
                f"build {rng.randrange(2019, 2027)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
                f".{rng.randrange(9)}",
                f"chrome {rng.randrange(90, 140)}.0.{rng.randrange(1000, 7000)}.{rng.randrange(10, 300)}",
            )
        ),
        "hashes and ids": lambda: rng.choice(
            (fake.sha1(), fake.md5(), fake.sha256(), fake.uuid4(), fake.sha1()[:7], f"commit {fake.sha1()[:12]}")
        ),
        "ISBN, EAN and tracking": lambda: rng.choice(
            (fake.isbn13(), fake.isbn10(), fake.ean13(), f"1Z{_rand(rng, string.ascii_uppercase + string.digits, 16)}")
        ),
        "prices and measures": lambda: rng.choice(
            (f"${rng.randrange(10**6):,}.{rng.randrange(100):02d}", f"{rng.randrange(10**5)} km", f"{rng.random():.8f}")
        ),
        "dates and times after a phone cue": lambda: rng.choice(
            (
                f"call me on {fake.date()} at {rng.randrange(24):02d}:{rng.randrange(60):02d}",
                f"phone meeting {fake.date_time():%Y-%m-%d %H:%M}",
                f"text me the ticket number {rng.randrange(10**5, 10**8)}",
                f"call at 5pm re order {rng.randrange(10**5, 10**8)}",
            )
        ),
    }
    out: list[Sample] = []
    for family, make in families.items():
        out += [Sample(f"Ref: {make()} (see log)", None, None, family) for _ in range(n)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=150, help="samples per kind (per locale: n/4)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--misses", type=int, default=0, help="print this many misses per family")
    args = ap.parse_args()
    try:
        samples = positives(args.n, args.seed) + negatives(args.n, args.seed)
    except ImportError:
        print("Faker is not installed: `pip install faker` (into the bench venv, not the project's)")
        sys.exit(1)
    found_by_kind: dict[str, int] = {}
    true_by_kind: dict[str, int] = {}
    recall: dict[str, list[int]] = {}
    fam_recall: dict[str, list[int]] = {}
    neg_hits: dict[str, list[int]] = {}
    shown: dict[str, int] = {}
    t0 = time.perf_counter()
    for s in samples:
        findings = find_pii(s.text)
        for f in findings:
            found_by_kind[f.kind] = found_by_kind.get(f.kind, 0) + 1
            if s.kind == f.kind and s.span is not None and f.start < s.span[1] and s.span[0] < f.end:
                true_by_kind[f.kind] = true_by_kind.get(f.kind, 0) + 1
        if s.kind is None:
            h = neg_hits.setdefault(s.family, [0, 0])
            h[0] += 1
            h[1] += bool(findings)
            if findings and shown.get(s.family, 0) < args.misses:
                shown[s.family] = shown.get(s.family, 0) + 1
                print(f"   [FP {s.family}] {s.text!r} -> {[(f.kind, s.text[f.start : f.end]) for f in findings]}")
            continue
        assert s.span is not None
        hit = any(f.kind == s.kind and f.start <= s.span[0] and s.span[1] <= f.end for f in findings)
        for key, table in ((s.kind, recall), (s.family, fam_recall)):
            r = table.setdefault(key, [0, 0])
            r[0] += 1
            r[1] += hit
        if not hit and shown.get(s.family, 0) < args.misses:
            shown[s.family] = shown.get(s.family, 0) + 1
            print(f"   [MISS {s.family}] {s.text!r} -> {[(f.kind, s.text[f.start : f.end]) for f in findings]}")
    elapsed = time.perf_counter() - t0
    print("| kind | planted | recall | findings | precision |")
    print("|---|---:|---:|---:|---:|")
    for kind in sorted(recall):
        n, hits = recall[kind]
        found = found_by_kind.get(kind, 0)
        prec = f"{true_by_kind.get(kind, 0) / found:.1%}" if found else "-"
        print(f"| {kind} | {n} | {hits / n:.1%} | {found} | {prec} |")
    print("\n| generated family | n | recall |")
    print("|---|---:|---:|")
    for fam in sorted(fam_recall):
        n, hits = fam_recall[fam]
        print(f"| {fam} | {n} | {hits / n:.1%} |")
    print("\n| hard-negative family | n | texts with any finding |")
    print("|---|---:|---:|")
    for fam, (n, hits) in neg_hits.items():
        print(f"| {fam} | {n} | {hits} ({hits / n:.1%}) |")
    print(f"\n{len(samples)} texts scanned in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
