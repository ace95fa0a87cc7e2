"""The reference the fast PII scanner is held to: every pattern run with `finditer` over the whole text, each kind's
check applied, overlaps resolved in priority order (the implementation before the anchored scanner; ~70 ns per
character per pattern). tests/unit/test_pii.py and test_pii_fast_path.py compare the scanner with it."""

from __future__ import annotations

import re
from collections.abc import Callable

from bulwark.guardrails import pii

_REF_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool]]] = [
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"), lambda m: True),
    ("bulwark_api_key", re.compile(r"\bbwk_[A-Za-z0-9_-]{12,200}"), lambda m: True),
    (
        "aws_access_key_id",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"),
        lambda m: True,
    ),
    ("aws_secret_access_key", pii._AWS_SECRET, pii._aws_secret_ok),
    ("api_token", pii._API_TOKEN, lambda m: True),
    ("bearer_token", pii._BEARER, lambda m: True),
    ("credential_assignment", pii._CREDENTIAL, lambda m: True),
    ("email", pii._EMAIL, lambda m: True),
    ("iban", pii._IBAN, pii._iban_ok),
    ("payment_card", pii._CARD, pii._card_ok),
    ("us_ssn", pii._SSN, lambda m: True),
    ("uk_nino", pii._UK_NINO, lambda m: True),
    (  # as first written: the octet group repeated, and a leading-zero check the scanner no longer needs
        "ipv4",
        re.compile(
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
        ),
        lambda m: re.search(r"(?:^|\.)0\d", m.group(0)) is None,
    ),
    ("ipv6", pii._IPV6, pii._ipv6_ok),
    ("phone", pii._PHONE_INTL, pii._intl_phone_ok),
    ("phone", pii._PHONE, lambda m: True),
    ("phone", pii._PHONE_CUE, pii._cue_phone_ok),
]
_GROUP = {id(pii._AWS_SECRET): "secret", id(pii._PHONE_CUE): "num"}  # kinds whose finding is one group of the match


def reference_find(text: str) -> list[tuple[str, int, int]]:
    candidates = [("private_key", s, e) for s, e in pii._private_keys(text)] if "PRIVATE KEY" in text else []
    for kind, pattern, ok in _REF_PATTERNS:
        for m in pattern.finditer(text):
            if ok(m):
                span = m.span(_GROUP.get(id(pattern), 0))
                candidates.append((kind, *span))
    claimed = bytearray(len(text))
    taken = []
    for kind, s, e in candidates:
        if not any(claimed[s:e]):
            claimed[s:e] = b"\x01" * (e - s)
            taken.append((kind, s, e))
    return sorted(taken, key=lambda f: f[1])


def scanner_find(text: str) -> list[tuple[str, int, int]]:
    """find_pii's findings as reference_find lists them."""
    return [(f.kind, f.start, f.end) for f in pii.find_pii(text)]


def reference_redact(text: str) -> tuple[str, tuple[str, ...]]:
    """redact_pii as the reference finds: each finding replaced by its kind's placeholder, the kinds sorted."""
    out: list[str] = []
    pos = 0
    findings = reference_find(text)
    for kind, start, end in findings:
        out.append(text[pos:start])
        out.append(pii.placeholder(kind))
        pos = end
    out.append(text[pos:])
    return "".join(out), tuple(sorted({kind for kind, _s, _e in findings}))


def numeric_iin_ok(digits: str) -> bool:
    """The card networks' prefix and length rule by the numbers' values (pii._iin_ok compares ASCII strings)."""
    n, first, two, four = len(digits), int(digits[0]), int(digits[:2]), int(digits[:4])
    if first == 4:
        return n in (13, 16, 19)
    if two in (34, 37):
        return n == 15
    if two in (30, 35, 36, 38):
        return n >= 14
    if four in (1800, 2131):
        return n == 15
    if first == 2:
        return n == 16 and 2221 <= four <= 2720
    return first in (5, 6) and n >= 16
