"""Text sanitization: what the model reads is normalized and stripped of characters that hide instructions.

NFKC folds compatibility forms (fullwidth letters, ligatures, styled math letters) to their plain form, so what a
human reviewer sees is what the model reads. Removed outright: zero-width characters, bidi controls, variation
selectors, the Unicode tag block (used for "ASCII smuggling") and C0/C1 controls other than tab, newline and CR.
"""

from __future__ import annotations

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


def sanitize_text(text: str) -> str:
    """NFKC-normalize and remove invisible/control characters (keeps tab, newline, carriage return)."""
    cleaned = text.translate(_DROP)
    if not unicodedata.is_normalized("NFKC", cleaned):
        # NFKC can itself produce a removable character only in theory; a second pass keeps the invariant exact.
        cleaned = unicodedata.normalize("NFKC", cleaned).translate(_DROP)
    return cleaned


def sanitize_chat(req: ChatCompletionRequest) -> ChatCompletionRequest:
    """A copy of the request with every text the model will read sanitized."""
    from bulwark.validation.chat import map_texts  # chat imports this module's siblings; keep the cycle lazy

    return map_texts(req, sanitize_text)
