"""PII and credential detection with typed redaction.

Written here rather than taken from a library: Presidio (the maintained option) needs spaCy and a language model of
hundreds of MB, far over a Lambda layer's budget and cold-start time. Every kind below is a structured identifier that
a checksum or a fixed shape identifies well (Luhn, mod-97, ipaddress), which is what regexes do reliably.

Every pattern is linear-time: bounded repetition, character classes disjoint from their separators, and no
lazy scans to a closing marker (private-key blocks are found with str.find instead).

Speed. Python's `re` tries a pattern at every position unless the pattern starts with a literal, so fourteen patterns
over a 1 MiB prompt cost about a second. Each kind is therefore found through an anchor that C code locates quickly,
and the exact pattern only runs where a match is possible; the findings are the same as running every pattern with
`finditer` over the whole text (tests/unit/test_pii.py checks this against that reference implementation):

- literal-led kinds (JWT, `bwk_` keys, AWS key ids) are written so the pattern starts with its literal (the word
  boundary moves into a lookbehind after it), which lets `re` skip ahead with its prefix search;
- keyword-led kinds (AWS secrets, bearer tokens, credential assignments) are tried only where their keyword occurs
  (in a lower-cased copy of the same length) and only when the text has the `:`/`=` they require;
- API tokens are tried only where one of their prefixes ends (a `-`, `_` or `AIza` anchor);
- emails pair each `@` followed by a valid domain with its local part, found for every `@` in one pass over the
  reversed text (the longest run of local characters, at most 64, that starts on a word boundary);
- number-shaped kinds work on a byte map of the text (digits of any script, capitals, `:` `.` `-` kept): cards and
  phones need a run of at least 13 / 8 digits no more than three characters apart, and their exact patterns run over
  those runs plus the few characters of context their lookarounds read (windows concatenated, scanned once); SSNs,
  IPv4 addresses and IBANs are tried where their digit shape starts; IPv6 needs two colons at most four apart.

The equivalence arguments are in the comments next to each anchor; a reference-comparison property test backs them.
"""

from __future__ import annotations

import bisect
import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True)
class PiiFinding:
    kind: str
    start: int
    end: int


_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # the digit 2d - 9 * (2d > 9), as its ASCII character


def _luhn_ok(digits: str) -> bool:
    """The Luhn check of ASCII digits (byte sums run in C)."""
    odd, even = digits[-1::-2].encode(), digits[-2::-2].encode().translate(_DOUBLED)
    return (sum(odd) + sum(even) - 48 * len(digits)) % 10 == 0


def _iin_ok(digits: str) -> bool:
    """A card network's prefix and length (Visa 4: 13/16/19; Mastercard 51-55, 2221-2720: 16; Amex 34/37: 15; Diners
    30/36/38 and JCB 35: 14-19; JCB 1800/2131: 15; Discover, UnionPay, Maestro 5/6: 16-19). An ISBN (978...), an EAN or
    a millisecond timestamp (1...) that happens to pass Luhn (one in ten does) is not a card. ASCII digits, compared as
    strings (equal-length digit strings order as their numbers do), without an int() per prefix."""
    n, first, two = len(digits), digits[0], digits[:2]
    if first == "4":
        return n in (13, 16, 19)
    if two in ("34", "37"):
        return n == 15
    if two in ("30", "35", "36", "38"):
        return n >= 14
    if digits[:4] in ("1800", "2131"):
        return n == 15
    if first == "2":
        return n == 16 and "2221" <= digits[:4] <= "2720"
    return first in ("5", "6") and n >= 16


def _card_ok(m: re.Match[str]) -> bool:
    digits = m.group(0).replace(" ", "").replace("-", "")
    if not digits.isascii():  # `\d` takes a decimal digit of any script: read as its value once, here
        digits = "".join(str(int(c)) for c in digits)
    n = len(digits)  # a count in C says whether every digit is the first one; a set of them cost more
    return 13 <= n <= 19 and digits.count(digits[0]) < n and _iin_ok(digits) and _luhn_ok(digits)


def _iban_ok(m: re.Match[str]) -> bool:
    s = m.group(0).replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def _ipv6_ok(m: re.Match[str]) -> bool:
    s = m.group(0)
    colons = s.count(":")
    # Without "::" an address (hex groups only, as _IPV6 matches) has exactly 8 groups: times such as 12:04:33 are
    # refused here, before the costly ipaddress parse.
    if colons < 2 or ("::" not in s and colons != 7) or sum(1 for g in s.split(":") if g) < 3:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _aws_secret_ok(m: re.Match[str]) -> bool:
    s = m.group("secret")
    return any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _digit_count(number: str) -> int:
    head = number.partition("x")[0]  # the extension does not count
    if head.isascii():  # what deleting the digits (in C) removes; isdigit() is true for other characters too
        return len(head) - len(head.encode("ascii").translate(None, b"0123456789"))
    return sum(map(str.isdigit, head))


def _intl_phone_ok(m: re.Match[str]) -> bool:
    return 8 <= _digit_count(m.group(0)) <= 15


def _cue_phone_ok(m: re.Match[str]) -> bool:
    number = m.group("num")
    return 9 <= _digit_count(number) <= 15 and _ISO_DATE.search(number) is None


_Check = Callable[[re.Match[str]], bool]
_Span = tuple[int, int]

# ---- exact patterns ------------------------------------------------------------------------------------------------
# Literal-led: `\bLIT` is written `LIT(?<!\wLIT)` (same meaning: LIT starts with a word character) so `re` can use its
# fast prefix search.
_JWT = re.compile(r"eyJ(?<!\weyJ)[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}")
_BWK = re.compile(r"bwk_(?<!\wbwk_)[A-Za-z0-9_-]{12,200}")
_AWS_KEY = re.compile(r"A(?<!\wA)(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA)[A-Z0-9]{16}\b")
_AWS_SECRET = re.compile(
    r"(?i:aws|secret)[A-Za-z0-9_ .-]{0,30}[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
    r"(?P<secret>(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))"
)
_API_TOKEN = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,200}|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,200}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,200}"
    r"|sk_live_[A-Za-z0-9]{16,200}|rk_live_[A-Za-z0-9]{16,200}|hf_[A-Za-z0-9]{30,64}|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_-]{50,300}|SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64})"
)
_BEARER = re.compile(r"(?i:\bbearer)[ \t]{1,5}[A-Za-z0-9._~+/-]{16,4096}=*")
_CREDENTIAL = re.compile(
    r"(?i:\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret|secret[_-]?key|password|passwd))"
    r"[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?[^\s\"']{8,256}"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
# UK National Insurance number: two prefix letters (D, F, I, Q, U, V never; O not second; BG GB KN NK NT TN ZZ not
# allocated), three digit pairs, a suffix A-D; spaces between the parts as people write them.
_UK_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# An octet is 0-255 without a leading zero ("0" alone, never "01"): leading zeros are how versions and dates look.
# Written out four times rather than as a group repeated three times: the same pattern, a tenth faster in `re`.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])")
# An extension ("x38827", " x 12") keeps at most 3 characters between digits, as the digit-run windows require.
_EXT = r"(?: ?x ?\d{1,6})?"
# National shapes: groups of 2-4, 3-4 and 3-4 digits after an optional +CC or 00CC; a bracketed area code before 5-8
# digits ("(0808)1570623"); a trunk 0 and area code before 5-8 digits ("01632 960848"); French pairs
# ("06 95 18 18 33"). Each has at least 8 digits, as the digit-run prefilter requires (so "01-20231" is not a phone
# either way). A bare run of digits with no cue is not a phone here: it is as likely an order number.
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"
    r"(?:\+\d{1,3}[ .-]?|00\d{1,3}[ .-])?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"
    r"|\((?:\d{2}\)[ .-]?\d{6,8}|\d{3,5}\)[ .-]?\d{5,8})|0(?:\d[ -]\d{6,8}|\d{2,4}[ -]\d{5,8})|0\d(?:[ .]\d\d){4})"
    rf"{_EXT}(?![\w-])(?![ .]\d)"
    rf"|(?<![\w+])\+\d{{8,14}}{_EXT}(?!\w)"
)
# International numbers written in groups ("+33 1 23 45 67 89", "+49 (0)30 1234567", "+44 20 7946 0958 x12"): '+'-led
# (the literal first so `re` finds it in C), 8 to 15 digits in all (_intl_phone_ok).
_PHONE_INTL = re.compile(r"\+(?<![\w+]\+)\d{1,3}(?: ?\(0\))?(?:[ .-]?\d{1,5}+){1,6}" + _EXT + r"(?![\w-])(?![ .]\d)")
# A bare or grouped number right after a phone cue ("call me at 6287684592", "tel: 0123 456 789"): 9 to 15 digits
# (_cue_phone_ok), so dates (8 digits) after "call" are not numbers. Keyword-led; the span is the number only.
_PHONE_CUE = re.compile(
    r"(?i:\b(?:call|calling|phone|telephone|tel|mobile|cell|cellphone|whatsapp|fax|text me|sms|reach me|dial))"
    r"(?i:\b[^\d\n+(]{0,24}?)(?P<num>(?<![\w+])\+?\(?\d[\d ().-]{7,22}\d" + _EXT + r")(?![\w-])"
)
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY-----")

# Priority order: earlier kinds win an overlap (credentials before the generic shapes they contain).
_ORDER = (
    "private_key",
    "jwt",
    "bulwark_api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "api_token",
    "bearer_token",
    "credential_assignment",
    "email",
    "iban",  # before cards: a checksummed IBAN's digits can pass Luhn too
    "payment_card",
    "us_ssn",
    "uk_nino",
    "ipv4",
    "ipv6",
    "phone_intl",  # before phone: "+44(0)131 496 0909" whole, not its national part
    "phone",
    "phone_cue",
)
# Internal kinds that report as another: the phone shapes are found by three scanners, and reported as one kind.
_PUBLIC_KIND = {"phone_intl": "phone", "phone_cue": "phone"}

# ---- anchors -------------------------------------------------------------------------------------------------------
# API tokens: every match starts 2/4/5 characters before a '-' (sk-, pypi-, xoxb-, glpat-), 2/3/4/7/10 before a '_'
# (hf_, ghp_, npm_, sk_live_, github_pat_), or at "AIza" or "SG.". The lookbehinds only thin the candidates; the exact
# pattern decides.
_API_DASH = re.compile(r"-(?:(?<=\bsk-)|(?<=\bxox[abposr]-)|(?<=\bglpat-)|(?<=\bpypi-))")
_API_UNDERSCORE = re.compile(r"_(?:(?<=\bgh[pousr]_)|(?<=\bgithub_pat_)|(?<=\b[sr]k_live_)|(?<=\bhf_)|(?<=\bnpm_))")
_API_AIZA = re.compile(r"AIza(?<!\wAIza)")
_API_SG = re.compile(r"SG\.(?<!\wSG\.)")
# Case-folded keyword scans (on a lower-cased copy of the same length). A credential assignment is tried where its
# whole keyword occurs, not a prefix of it: "api" alone is in every URL path of a log ("/api/v2/orders").
_PHONE_CUES = ("call", "phone", "tel", "mobile", "cell", "whatsapp", "fax", "text", "sms", "reach", "dial")
_CREDENTIAL_KWS = ("api[_-]?key", "access[_-]?token", "auth[_-]?token", "client[_-]?secret", "secret[_-]?key", "passw")
_KW = {kw: re.compile(kw) for kw in ("aws", "secret", "bearer", *_CREDENTIAL_KWS, *_PHONE_CUES)}
# UK NI numbers: two capitals, then three digit pairs (a space allowed before each), then a capital.
_NINO_START = re.compile(rb"A(?=A ?00 ?00 ?00 ?A)")
# Emails: '@' plus a valid domain (literal-led), then the local part right before that '@'.
_EMAIL_AT = re.compile(r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}\b")
_EMAIL_LOCAL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@\Z")
_EMAIL_LOCAL_REV = re.compile(r"@[A-Za-z0-9._%+-]{1,64}\b")

# Byte map of the text, one byte per character: decimal digits (any script, as `\d` matches) -> "0", A-Z -> "A",
# ':', '.' and '-' kept, everything else -> ' '.
_MAP = bytes(ord("0") if 48 <= b <= 57 else ord("A") if 65 <= b <= 90 else b if b in b":.-" else 32 for b in range(256))
# Maximal runs of digits at most 3 characters apart with at least 8 digits (phones); group `long` takes part when there
# are at least 13 (cards). The lookbehinds (no digit in the 4 characters before) try a run from its first digit only.
# The gaps and the tail are possessive (`{0,3}+`, `*+`): the classes are disjoint, so giving back could never help, and
# not keeping the positions to give back to makes the scan a quarter faster.
_DIGIT_RUNS = re.compile(
    rb"0(?<!00)(?<!0.0)(?<!0..0)(?<!0...0)(?:[^0]{0,3}+0){7}(?P<long>(?:[^0]{0,3}+0){5})?(?:[^0]{0,3}+0)*+", re.DOTALL
)
# Where an SSN can start, 3 characters before its first dash: dash-led, so `re` skips from dash to dash in C (a scan led
# by "0" tries every digit). Occurrences of the shape cannot overlap (a dash would have to fall on a digit), so a
# consuming scan finds them all.
_SSN_DASH = re.compile(rb"-(?<=000-)(?=00-0000)")
# Where an IPv4 address can start: 1 to 3 characters before its first dot (dot-led, as above), a digit not after a
# digit or a dot; `_ipv4_starts` keeps the digit that starts the run before the dot.
_IPV4_DOT = re.compile(rb"\.(?<=0\.)(?=0{1,3}\.0{1,3}\.0)")
_COLON_CLUSTER = re.compile(rb":(?:[^:]{0,4}+:)++")  # >= 2 colons, at most 4 characters apart (possessive: as above)
# Shapes (on the byte map) one of which every match of a kind contains, checked within a run before its window is
# scanned: a card has 13 digits with at most one space or dash between each; a phone ends in 3+ digits, a separator,
# 3+ digits, or is '+' and 8+ digits. Dates, times and versions in logs and tables have neither, and are not scanned.
# (One scan of the whole map per shape, placing its matches in runs, cost more on digit-heavy text: "00" is everywhere
# there, and most runs hold a shape anyway.) A card shape starts "00", "0 0" or "0-0": three searches each led by a
# literal `re` finds in C beat one that tries every digit (on a run of IP addresses, 2.5x).
_CARD_SHAPES = tuple(re.compile(lead + rb"(?:[ -]?0){11}") for lead in (rb"00", rb"0 0", rb"0-0"))
# 000[ .-]000|0{8}, or a digit and one or two separators before 5 digits, or four spaced pairs. Each contains "00",
# so the search is led by it (the lookbehinds re-read the digit and separators before it): a run whose digits stand
# alone, such as a list of short IP addresses, is passed over in C.
_PHONE_SHAPE = re.compile(
    rb"00(?:0[ .-]000|0{6}|000(?<=0[ .-]00000)|000(?<=0[ .-][ .-]00000)|(?<=0[ .]00)[ .]00[ .]00[ .]00)"
)
_IBAN_START = re.compile(rb"AA00")
_NON_ASCII_DIGITS = re.compile(r"[^\D\x00-\x7f]+")  # runs of decimal digits outside ASCII (`\d` matches them)


def _byte_map(text: str) -> bytes:
    """One byte per character of `text`, mapped by _MAP (non-ASCII characters count as '?', except digits)."""
    if text.isascii():
        return text.encode("ascii").translate(_MAP)
    raw = text.encode("ascii", "replace")  # one '?' per character, in C
    if _NON_ASCII_DIGITS.search(text) is not None:
        patched = bytearray(raw)
        for m in _NON_ASCII_DIGITS.finditer(text):
            patched[m.start() : m.end()] = b"0" * (m.end() - m.start())
        raw = bytes(patched)
    return raw.translate(_MAP)


# Characters that match an ASCII letter case-insensitively but do not lower() to it (or not to one character).
_FOLD_FIXES = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"))


def _fold(text: str) -> str:
    if not text.isascii():
        for ch, repl in _FOLD_FIXES:
            if ch in text:
                text = text.replace(ch, repl)
    return text.lower()


# ---- scanners ------------------------------------------------------------------------------------------------------


_DENSE = 64


def _spans(it: Iterable[re.Match[str]], ok: _Check | None = None) -> list[_Span]:
    if ok is None:
        return list(map(re.Match.span, it))  # no Python frame per match: tens of thousands in a list of addresses
    return [m.span() for m in it if ok(m)]


def _match_at(
    pattern: re.Pattern[str], text: str, starts: Iterable[int], ok: _Check | None = None, group: int | str = 0
) -> list[_Span]:
    """What `pattern.finditer(text)` (filtered by `ok`) finds, given a superset of the positions where a match can
    start, in any order. A match that `ok` refuses still consumes its text, as it does in `finditer`.

    With a start every _DENSE characters or more often, `finditer` itself is cheaper (a `match` call costs about what
    scanning 40 characters does), and it finds the same by definition."""
    candidates = sorted(set(starts))
    if len(candidates) * _DENSE > len(text):
        return [m.span(group) for m in pattern.finditer(text) if ok is None or ok(m)]
    out: list[_Span] = []
    last_end = 0
    for s in candidates:
        if s < last_end:
            continue
        m = pattern.match(text, s)
        if m is not None:
            last_end = m.end()
            if ok is None or ok(m):
                out.append(m.span(group))
    return out


def _kw_starts(folded: str, *keywords: str, back: int = 0) -> Iterator[int]:
    for kw in keywords:
        for m in _KW[kw].finditer(folded):
            yield m.start() - back


def _private_keys(text: str) -> list[_Span]:
    found: list[_Span] = []
    for m in _PEM_BEGIN.finditer(text):
        end_at = text.find("-----END ", m.end())
        if end_at < 0:
            found.append((m.start(), len(text)))
            break  # an unterminated block runs to the end: nothing after it is left unredacted
        close = text.find("-----", end_at + 9)
        found.append((m.start(), len(text) if close < 0 else close + 5))
    return found


def _api_tokens(text: str) -> list[_Span]:
    starts: list[int] = []
    if "-" in text:
        for m in _API_DASH.finditer(text):
            p = m.start()
            starts += (p - 2, p - 4, p - 5)
    if "_" in text:
        for m in _API_UNDERSCORE.finditer(text):
            p = m.start()
            starts += (p - 2, p - 3, p - 4, p - 7, p - 10)
    starts += (m.start() for m in _API_AIZA.finditer(text))
    if "SG." in text:
        starts += (m.start() for m in _API_SG.finditer(text))
    return _match_at(_API_TOKEN, text, (s for s in starts if s >= 0))


def _emails(text: str) -> list[_Span]:
    ats = [m.span() for m in _EMAIL_AT.finditer(text)]
    if not ats:
        return []
    # The local part is the longest run of local characters before the '@' (at most 64) that starts on a word
    # boundary: one pass over the reversed text finds it for every '@' at once.
    n = len(text)
    locals_ = [(n - 1 - m.start(), n - m.end()) for m in _EMAIL_LOCAL_REV.finditer(text[::-1])]
    locals_.reverse()
    starts = [s for _at, s in locals_]
    ends = [e for _at, e in ats]
    if [at for at, _s in locals_] == [at for at, _e in ats] and all(map(operator.ge, starts[1:], ends)):
        return list(zip(starts, ends, strict=True))  # the usual case: every '@' pairs up and nothing overlaps
    local_start = dict(locals_)
    out: list[_Span] = []
    last_end = 0
    for at, end in ats:
        start = local_start.get(at)
        if start is None:
            continue
        if start < last_end:  # the previous email ends inside this local part: search only after it
            m = _EMAIL_LOCAL.search(text, max(at - 64, last_end), at + 1)
            if m is None:
                continue
            start = m.start()
        out.append((start, end))
        last_end = end
    return out


def _ipv4_starts(mapped: bytes) -> Iterator[int]:
    """Where an IPv4 address can start: the first digit of the 1 to 3 before a dot that the dotted-quad shape
    follows, when no digit or dot comes before it."""
    for m in _IPV4_DOT.finditer(mapped):
        dot = m.start()
        start = dot - 1
        while start > dot - 3 and start > 0 and mapped[start - 1] == 48:  # b"0"
            start -= 1
        if start == 0 or mapped[start - 1] not in b"0.":
            yield start


def _unbeaten_runs(found: dict[str, list[_Span]], kind: str, runs: set[_Span]) -> set[_Span]:
    """The findings of `kind` that are a whole digit run and that no finding of an earlier-listed kind overlaps.

    A later-listed kind need not scan such a run: whatever it finds there holds a digit of the run, so overlaps this
    finding, which _resolve keeps; and a match never spans two runs, so nothing it finds elsewhere changes (a card
    number as a whole run, in a text of cards and phones, is most of what the phone scan would read)."""
    whole = [span for span in found.get(kind, ()) if span in runs]
    earlier = sorted(span for other in _ORDER[: _ORDER.index(kind)] for span in found.get(other, ()))
    if not whole or not earlier:
        return set(whole)
    starts = [s for s, _e in earlier]
    reach = list(accumulate((e for _s, e in earlier), max))  # the furthest end among the first i + 1
    unbeaten: set[_Span] = set()
    for s, e in whole:
        i = bisect.bisect_left(starts, e)  # earlier[:i] start before this finding ends
        if i == 0 or reach[i - 1] <= s:
            unbeaten.add((s, e))
    return unbeaten


def _windows(clusters: list[_Span], before: int, after: int, size: int) -> list[_Span]:
    wins: list[_Span] = []
    for start, end in clusters:
        lo, hi = max(0, start - before), min(size, end + after)
        if wins and lo <= wins[-1][1]:
            wins[-1] = (wins[-1][0], hi)
        else:
            wins.append((lo, hi))
    return wins


def _scan_windows(
    text: str, wins: list[_Span], kinds: Iterable[tuple[re.Pattern[str], _Check | None]]
) -> list[list[_Span]]:
    """Run each pattern over the windows only, as if over the whole text.

    Callers make every window hold each possible match together with the characters its lookarounds read, and keep
    windows apart by more than a match can bridge; the windows are then concatenated and scanned once per pattern.
    """
    if not wins:
        return [[] for _ in kinds]
    if sum(hi - lo for lo, hi in wins) * 2 > len(text):
        return [_spans(p.finditer(text), ok) for p, ok in kinds]
    sub = "".join(text[lo:hi] for lo, hi in wins)
    bases: list[int] = []  # position in `sub` where each window starts
    pos = 0
    for lo, hi in wins:
        bases.append(pos)
        pos += hi - lo
    results: list[list[_Span]] = []
    for pattern, ok in kinds:
        found: list[_Span] = []
        i = 0
        for m in pattern.finditer(sub):
            if ok is not None and not ok(m):
                continue
            s, e = m.span()
            while i + 1 < len(bases) and bases[i + 1] <= s:
                i += 1
            shift = wins[i][0] - bases[i]
            found.append((s + shift, e + shift))
        results.append(found)
    return results


def _candidates(text: str) -> dict[str, list[_Span]]:
    """Every kind's matches, each list exactly what `finditer` plus the kind's check gives over the whole text."""
    found: dict[str, list[_Span]] = {}
    if "PRIVATE KEY" in text:
        found["private_key"] = _private_keys(text)
    if "J" in text:  # single-character checks are memchr-fast; prose rarely has these
        found["jwt"] = _spans(_JWT.finditer(text))
    if "_" in text:
        found["bulwark_api_key"] = _spans(_BWK.finditer(text))
    found["aws_access_key_id"] = _spans(_AWS_KEY.finditer(text))
    assigns = ":" in text or "=" in text
    folded = _fold(text)
    if assigns:
        found["aws_secret_access_key"] = _match_at(
            _AWS_SECRET, text, _kw_starts(folded, "aws", "secret"), _aws_secret_ok, group="secret"
        )
    found["api_token"] = _api_tokens(text)
    found["bearer_token"] = _match_at(_BEARER, text, _kw_starts(folded, "bearer"))
    if assigns:
        found["credential_assignment"] = _match_at(_CREDENTIAL, text, _kw_starts(folded, *_CREDENTIAL_KWS))
    if "@" in text:
        found["email"] = _emails(text)
    if text.isascii() and ":" not in text and not any(d in text for d in "0123456789"):
        return found  # the byte map below would hold neither digits nor colons
    mapped = _byte_map(text)
    n = len(text)
    if b"0" in mapped:
        # Windows: 4 characters before a run, 3 after. Runs are maximal with gaps of at most 3, so those characters hold
        # no digit, and concatenated windows meet across at least 7 digit-free characters. Card and phone matches have
        # at most 2 characters between digits and 1 before the first ('+' or '('); their lookarounds read at most 2
        # more on either side. So every match, with what it reads, lies inside one window, and none spans two.
        runs = [(m.start(), m.end(), m.start("long") >= 0) for m in _DIGIT_RUNS.finditer(mapped)]
        card_runs = [(s, e) for s, e, long in runs if long and any(p.search(mapped, s, e) for p in _CARD_SHAPES)]
        (found["payment_card"],) = _scan_windows(text, _windows(card_runs, 4, 3, n), ((_CARD, _card_ok),))
        found["iban"] = _match_at(_IBAN, text, (m.start() for m in _IBAN_START.finditer(mapped)), _iban_ok)
        whole_cards = _unbeaten_runs(found, "payment_card", {(s, e) for s, e, _ in runs})
        phone_runs = [(s, e) for s, e, _ in runs if (s, e) not in whole_cards and _PHONE_SHAPE.search(mapped, s, e)]
        (found["phone"],) = _scan_windows(text, _windows(phone_runs, 4, 3, n), ((_PHONE, None),))
        found["us_ssn"] = _match_at(_SSN, text, (m.start() - 3 for m in _SSN_DASH.finditer(mapped)))
        found["uk_nino"] = _match_at(_UK_NINO, text, (m.start() for m in _NINO_START.finditer(mapped)))
        if "+" in text:
            found["phone_intl"] = _spans(_PHONE_INTL.finditer(text), _intl_phone_ok)
        found["phone_cue"] = _match_at(_PHONE_CUE, text, _kw_starts(folded, *_PHONE_CUES), _cue_phone_ok, group="num")
        if mapped.count(b"0.0") * _DENSE > 3 * n:  # an address holds "0.0" three times: dense, finditer (_match_at)
            found["ipv4"] = _spans(_IPV4.finditer(text))
        else:
            found["ipv4"] = _match_at(_IPV4, text, _ipv4_starts(mapped))
    if b":" in mapped:
        # IPv6: colons at most 4 apart, up to 4 hex digits before the first and after the last, 1 character of
        # lookaround: windows of 5 either side of a maximal colon run hold every match and never let one span two.
        # An address _ipv6_ok accepts has "::" or 7 colons, all in one cluster: clocks (12:04:33) are not scanned.
        clusters = [m.span() for m in _COLON_CLUSTER.finditer(mapped) if b"::" in m[0] or m[0].count(b":") >= 7]
        (found["ipv6"],) = _scan_windows(text, _windows(clusters, 5, 5, n), ((_IPV6, _ipv6_ok),))
    return found


_SPAN_OF = operator.itemgetter(0, 1)


def _resolve(found: dict[str, list[_Span]]) -> list[tuple[int, int, str]]:
    """Non-overlapping findings sorted by position; on overlap the earlier-listed (more specific) kind wins."""
    kinds = [kind for kind in _ORDER if found.get(kind)]
    if not kinds:
        return []
    if len(kinds) == 1:  # each kind's own matches are sorted and never overlap
        kind = kinds[0]
        return [(s, e, kind) for s, e in found[kind]]
    ordered = [(s, e, kind) for kind in kinds for s, e in found[kind]]
    # The phone scanners often find the very same number; a finding with the span of an earlier-listed one would lose
    # to it and claim nothing, so only the first of each span is kept (a dict built in C: the last write wins, so the
    # findings go in in reverse priority order).
    by_span = dict(zip(map(_SPAN_OF, reversed(ordered)), reversed(ordered), strict=True))
    by_pos = sorted(by_span.values())
    starts, ends, _kinds = zip(*by_pos, strict=True)
    if all(map(operator.le, ends, starts[1:])):
        return by_pos  # nothing overlaps (each ends before the next starts): priority does not matter
    claimed = bytearray(max(ends))
    find = claimed.find
    taken: list[tuple[int, int, str]] = []
    for s, e, kind in ordered:  # priority order
        if find(1, s, e) < 0:  # nothing in s:e claimed yet (a search in C, no slice copied)
            claimed[s:e] = b"\x01" * (e - s)
            taken.append((s, e, kind))
    taken.sort()
    return taken


def find_pii(text: str) -> list[PiiFinding]:
    """Non-overlapping findings sorted by position; on overlap the earlier-listed (more specific) kind wins."""
    return [PiiFinding(_PUBLIC_KIND.get(kind, kind), s, e) for s, e, kind in _resolve(_candidates(text))]


_LABELS = {
    "email": "EMAIL",
    "phone": "PHONE",
    "payment_card": "CARD",
    "us_ssn": "SSN",
    "uk_nino": "NINO",
    "phone_intl": "PHONE",
    "phone_cue": "PHONE",
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


def placeholder(kind: str) -> str:
    return f"[REDACTED:{_LABELS.get(kind, kind.upper())}]"


_PLACEHOLDERS = {kind: placeholder(kind) for kind in _ORDER}


def redact_pii(text: str) -> tuple[str, tuple[str, ...]]:
    """Text with each finding replaced by a typed placeholder, and the kinds found (sorted, unique)."""
    return _redacted(text, _resolve(_candidates(text)))


def _redacted(
    text: str, findings: list[tuple[int, int, str]], lo: int = 0, hi: int | None = None
) -> tuple[str, tuple[str, ...]]:
    """text[lo:hi] with `findings` (positions in `text`, all inside lo:hi) replaced, and the kinds found."""
    hi = len(text) if hi is None else hi
    if not findings:
        return text[lo:hi], ()
    out: list[str] = []
    append = out.append
    pos = lo
    for start, end, kind in findings:  # a plain loop: a third faster than slicing lists built by comprehensions
        append(text[pos:start])
        append(_PLACEHOLDERS[kind])
        pos = end
    append(text[pos:hi])
    return "".join(out), tuple(sorted({_PUBLIC_KIND.get(kind, kind) for _s, _e, kind in findings}))


# Joins texts for one scan. No pattern consumes NUL, and every way across it first meets a newline that the pattern
# cannot take there either (`\s` is only allowed between a keyword and its value, which then must start with a
# non-space). Every lookaround and \b reads a newline as it reads the start or end of a text. So each text's findings
# are what scanning it alone finds (tests/unit/test_pii.py compares); private keys, which run to the end of their
# text when unterminated, are found per text.
_JOIN = "\n\x00\n"


def redact_pii_many(texts: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """redact_pii of each text, found in one scan of the texts joined: a scan costs ~40 µs before its first character
    (about fifteen passes), so a request of 256 short parts would spend ~10 ms on that alone."""
    joined = _JOIN.join(texts)
    if len(texts) < 2 or "PRIVATE KEY" in joined:
        return [redact_pii(text) for text in texts]
    findings = _resolve(_candidates(joined))
    results: list[tuple[str, tuple[str, ...]]] = []
    base = i = 0
    for text in texts:
        end = base + len(text)
        j = bisect.bisect_left(findings, (end,), i)  # the first finding that starts at or after the text's end
        # Sorted and apart, so all of them lie inside the text when the first and the last do. Across a join is
        # impossible by the argument above, but never trusted blindly.
        if j > i and (findings[i][0] < base or findings[j - 1][1] > end):
            return [redact_pii(text) for text in texts]
        results.append(_redacted(joined, findings[i:j], base, end) if j > i else (text, ()))
        base, i = end + len(_JOIN), j
    return results  # every finding was placed: the last text ends where the joined text does
