"""Text sanitization: what the model reads is normalized and stripped of characters that hide instructions.

NFKC folds compatibility forms (fullwidth letters, ligatures, styled math letters) to their plain form, so what a
human reviewer sees is what the model reads. Removed outright: zero-width characters, bidi controls, variation
selectors, the Unicode tag block (used for "ASCII smuggling") and C0/C1 controls other than tab, newline and CR.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulwark.validation.chat import ChatCompletionRequest


def _removal_table() -> dict[int, None]:
    drop: set[int] = set()
    drop.update(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))  # C0 controls
    drop.update(range(0x7F, 0xA0))  # DEL and C1 controls
    drop.update((0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0))
    drop.update(range(0x200B, 0x2010))  # zero-width space/joiners, LRM, RLM
    drop.update(range(0x202A, 0x202F))  # bidi embeddings and overrides
    drop.update(range(0x2060, 0x2070))  # word joiner, invisible operators, bidi isolates, deprecated format chars
    drop.update(range(0xFE00, 0xFE10))  # variation selectors (can carry hidden bytes)
    drop.update(range(0xFFF9, 0xFFFC))  # interlinear annotation controls
    drop.update(range(0xE0000, 0xE0080))  # Unicode tag block: invisible ASCII copies
    drop.update(range(0xE0100, 0xE01F0))  # variation selectors supplement
    return dict.fromkeys(drop)


_DROP = _removal_table()


def _char_class(codepoints: list[int]) -> str:
    parts: list[str] = []
    start = prev = codepoints[0]
    for c in [*codepoints[1:], -1]:
        if c == prev + 1:
            prev = c
            continue
        parts.append(f"\\U{start:08x}" if start == prev else f"\\U{start:08x}-\\U{prev:08x}")
        start = prev = c
    return "[" + "".join(parts) + "]+"


# str.translate is fast only for ASCII text (about 0.7 ms per MiB); for any other text it looks every character up
# in a dict (about 170 ms per MiB). Non-ASCII text is first checked with C-speed tests that are exact: isprintable()
# is False for every removable character except a few (combining marks, fillers, variation selectors), looked for
# with one small character class.
_DROP_RE = re.compile(_char_class(sorted(_DROP)))
_PRINTABLE_DROP_RE = re.compile(_char_class([c for c in sorted(_DROP) if chr(c).isprintable()]))


def _has_removable(text: str) -> bool:
    probe = text
    for ws in "\t\n\r":  # kept characters that isprintable() refuses
        if ws in probe:
            probe = probe.replace(ws, "")
    if not probe.isprintable():
        return True  # a control or format character, or a non-ASCII space (rare; the exact pass decides)
    return _PRINTABLE_DROP_RE.search(text) is not None


def _drop(text: str) -> str:
    if text.isascii():
        return text.translate(_DROP)
    return _DROP_RE.sub("", text) if _has_removable(text) else text


def sanitize_text(text: str) -> str:
    """NFKC-normalize and remove invisible/control characters (keeps tab, newline, carriage return)."""
    cleaned = _drop(text)
    if not cleaned.isascii() and not unicodedata.is_normalized("NFKC", cleaned):  # ASCII is always NFKC
        # NFKC can itself produce a removable character only in theory; a second pass keeps the invariant exact.
        cleaned = _drop(unicodedata.normalize("NFKC", cleaned))
    return cleaned


def sanitize_chat(req: ChatCompletionRequest) -> ChatCompletionRequest:
    """A copy of the request with every text the model will read sanitized."""
    from bulwark.validation.chat import map_texts  # chat imports this module's siblings; keep the cycle lazy

    return map_texts(req, sanitize_text)
