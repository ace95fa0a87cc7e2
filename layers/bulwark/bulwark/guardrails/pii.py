"""PII and credential detection with typed redaction.

Written here rather than taken from a library: Presidio (the maintained option) needs spaCy and a language model of
hundreds of MB, far over a Lambda layer's budget and cold-start time. Every kind below is a structured identifier that
a checksum or a fixed shape identifies well (Luhn, mod-97, ipaddress), which is what regexes do reliably.

Every pattern is linear-time: bounded repetition, character classes disjoint from their separators, and no
lazy scans to a closing marker (private-key blocks are found with str.find instead).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PiiFinding:
    kind: str
    start: int
    end: int


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_ok(m: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", m.group(0))
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits)


def _iban_ok(m: re.Match[str]) -> bool:
    s = m.group(0).replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def _ipv4_ok(m: re.Match[str]) -> bool:
    # Leading zeros are how version strings and dates look, not addresses.
    return not any(len(p) > 1 and p[0] == "0" for p in m.group(0).split("."))


def _ipv6_ok(m: re.Match[str]) -> bool:
    s = m.group(0)
    if s.count(":") < 2 or sum(1 for g in s.split(":") if g) < 3:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _aws_secret_ok(m: re.Match[str]) -> bool:
    s = m.group("secret")
    return any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)


def _always(_m: re.Match[str]) -> bool:
    return True


_Check = Callable[[re.Match[str]], bool]

# Order matters only for overlaps: earlier kinds win a tie (credentials before the generic shapes they contain).
_PATTERNS: tuple[tuple[str, re.Pattern[str], _Check], ...] = (
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"), _always),
    ("bulwark_api_key", re.compile(r"\bbwk_[A-Za-z0-9_-]{12,200}"), _always),
    (
        "aws_access_key_id",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"),
        _always,
    ),
    (
        "aws_secret_access_key",
        re.compile(
            r"(?i:aws|secret)[A-Za-z0-9_ .-]{0,30}[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
            r"(?P<secret>(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))"
        ),
        _aws_secret_ok,
    ),
    (
        "api_token",
        re.compile(
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,200}|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,200}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,200}"
            r"|sk_live_[A-Za-z0-9]{16,200}|rk_live_[A-Za-z0-9]{16,200})"
        ),
        _always,
    ),
    ("bearer_token", re.compile(r"(?i:\bbearer)[ \t]{1,5}[A-Za-z0-9._~+/-]{16,4096}=*"), _always),
    (
        "credential_assignment",
        re.compile(
            r"(?i:\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret|secret[_-]?key|password|passwd))"
            r"[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?[^\s\"']{8,256}"
        ),
        _always,
    ),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}\b"), _always),
    ("payment_card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card_ok),
    ("us_ssn", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"), _always),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), _iban_ok),
    (
        "ipv4",
        re.compile(
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
        ),
        _ipv4_ok,
    ),
    ("ipv6", re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])"), _ipv6_ok),
    (
        "phone",
        re.compile(
            r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"
            r"(?![\w-])(?![ .]\d)"
            r"|(?<![\w+])\+\d{8,14}(?!\w)"
        ),
        _always,
    ),
)

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY-----")

_LABELS = {
    "email": "EMAIL",
    "phone": "PHONE",
    "payment_card": "CARD",
    "us_ssn": "SSN",
    "iban": "IBAN",
    "ipv4": "IP",
    "ipv6": "IP",
    "aws_access_key_id": "AWS_KEY",
    "aws_secret_access_key": "AWS_SECRET",
    "jwt": "JWT",
    "bulwark_api_key": "API_KEY",
    "api_token": "API_KEY",
    "bearer_token": "TOKEN",
    "credential_assignment": "SECRET",
    "private_key": "PRIVATE_KEY",
}


def _private_keys(text: str) -> list[PiiFinding]:
    found: list[PiiFinding] = []
    for m in _PEM_BEGIN.finditer(text):
        end_at = text.find("-----END ", m.end())
        if end_at < 0:
            found.append(PiiFinding("private_key", m.start(), len(text)))
            break  # an unterminated block runs to the end: nothing after it is left unredacted
        close = text.find("-----", end_at + 9)
        found.append(PiiFinding("private_key", m.start(), len(text) if close < 0 else close + 5))
    return found


def find_pii(text: str) -> list[PiiFinding]:
    """Non-overlapping findings sorted by position; on overlap the earlier-listed (more specific) kind wins."""
    candidates = _private_keys(text) if "PRIVATE KEY" in text else []
    for kind, pattern, ok in _PATTERNS:
        for m in pattern.finditer(text):
            if ok(m):
                start, end = (m.start("secret"), m.end("secret")) if kind == "aws_secret_access_key" else m.span()
                candidates.append(PiiFinding(kind, start, end))
    # A claimed-position map keeps overlap checks linear even when an input holds thousands of candidates.
    claimed = bytearray(len(text))
    taken: list[PiiFinding] = []
    for f in candidates:  # already in priority order
        if not any(claimed[f.start : f.end]):
            claimed[f.start : f.end] = b"\x01" * (f.end - f.start)
            taken.append(f)
    return sorted(taken, key=lambda f: f.start)


def placeholder(kind: str) -> str:
    return f"[REDACTED:{_LABELS.get(kind, kind.upper())}]"


def redact_pii(text: str) -> tuple[str, tuple[str, ...]]:
    """Text with each finding replaced by a typed placeholder, and the kinds found (sorted, unique)."""
    findings = find_pii(text)
    if not findings:
        return text, ()
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(text[pos : f.start])
        out.append(placeholder(f.kind))
        pos = f.end
    out.append(text[pos:])
    return "".join(out), tuple(sorted({f.kind for f in findings}))
