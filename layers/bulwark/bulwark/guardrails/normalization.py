"""Normalization for the injection detector: obfuscation must not slip past the rules and the model.

NFKC and invisible-character removal (the same as the sanitizer), case folding, a homoglyph table (Cyrillic/Greek
look-alikes), and extra "views" of the text: leetspeak decoded, letter-by-letter spacing collapsed ("i g n o r e"), and
base64 / hex / URL-encoded / rot13 payloads decoded. Every rule runs on every view (see rules.py).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import urllib.parse

from bulwark.validation.sanitize import sanitize_text

_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
        "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ɑ": "a",
        "ο": "o", "α": "a", "ν": "v", "ι": "i", "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "ε": "e", "η": "n", "χ": "x",
        "ω": "w", "β": "b", "γ": "y", "μ": "u", "ꓲ": "i", "ı": "i", "ȷ": "j", "ᴀ": "a", "ʀ": "r", "ꜱ": "s", "ᴏ": "o",
        "’": "'", "‘": "'", "`": "'", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"',
    }
)  # fmt: skip
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_HAS_LEET = re.compile(r"[a-z][013457@$!]|[013457@$!][a-z]")
# Every maximal run of separators becomes one space. Written so a run that already is one plain space does not match
# (the same result as `[\s*_~|#>]+`, without replacing every space of the text by a space).
_SEPARATORS = re.compile(r"[\s*_~|#>]{2,}|(?! )[\s*_~|#>]")
# Letters split by one separator each ("i g n o r e", "i.g.n.o.r.e"); a wider gap is where a word ends.
_SPACED = re.compile(r"(?<![a-z0-9])(?:[a-z0-9][ .\-_*/|+]){3,}[a-z0-9](?![a-z0-9])")
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_-]{24,}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :]?){10,}")
_PCT = re.compile(r"(?:%[0-9a-fA-F]{2}){4,}")
_ROT13_HINT = re.compile(r"rot-?13|\bvtaber\b|\bvafgehpgvbaf\b|\bflfgrz\b")
_ROT13_LITERALS = ("rot", "vtaber", "vafgehpgvbaf", "flfgrz")  # one occurs in every match: a C-speed prefilter
_MAX_DECODED = 8  # decoded payloads per text: bounds the work an attacker can make us do


def _folded(text: str) -> str:
    return sanitize_text(text).casefold().translate(_CONFUSABLES)


def _basic(text: str) -> str:
    return _SEPARATORS.sub(" ", _folded(text))


def _printable_ratio(s: str) -> float:
    return sum(c.isprintable() or c in "\n\t" for c in s) / max(1, len(s))


def _decoded_payloads(text: str) -> list[str]:
    out: list[str] = []
    for m in _B64.finditer(text):
        raw = m.group(0)
        try:
            data = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_" if ("-" in raw or "_" in raw) else None)
            s = data.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if len(s) >= 8 and _printable_ratio(s) > 0.95 and " " in s:
            out.append(s)
        if len(out) >= _MAX_DECODED:
            return out
    for m in _HEX.finditer(text):
        try:
            s = bytes.fromhex(re.sub(r"[ :]", "", m.group(0))).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _printable_ratio(s) > 0.95 and " " in s:
            out.append(s)
        if len(out) >= _MAX_DECODED:
            return out
    if "%" in text and _PCT.search(text):
        out.append(urllib.parse.unquote(text))
    return out


def views(text: str) -> list[str]:
    """The normalized forms of `text` every rule is matched against (first one is the plain normalized text)."""
    folded = _folded(text)
    base = _SEPARATORS.sub(" ", folded)
    result = [base]
    if _HAS_LEET.search(base):
        result.append(base.translate(_LEET))
    if _SPACED.search(folded):
        despaced = _SEPARATORS.sub(" ", _SPACED.sub(lambda m: m.group(0)[::2], folded))
        result.append(despaced)
        if _HAS_LEET.search(despaced):
            result.append(despaced.translate(_LEET))
    if any(hint in base for hint in _ROT13_LITERALS) and _ROT13_HINT.search(base):
        result.append(codecs.encode(base, "rot13"))
    result.extend(_basic(p) for p in _decoded_payloads(text))
    return result
