"""A per-caller memo of PII scans of long texts, for the history a chat client sends again on every turn.

The Chat Completions API is stateless: each turn carries the whole conversation, so a validator container would scan
the same earlier messages again on every turn (digit-heavy text costs about 4 ms per 32 KB). This memo answers a text
it has scanned before with the same result.

- Only texts of at least MIN_CHARS are kept: shorter ones cost less to scan than to hash.
- Entries are keyed by the caller and the text's SHA-256. One caller's entries never answer for another's, so the
  time a request takes tells a caller nothing about what other callers sent.
- An entry holds the text as it goes upstream (redacted) and the kinds found, nothing else.
- The memo is bounded by the characters it holds; the least recently used entries go first. `max_chars=0` turns it
  off (BULWARK_PII_MEMO_CHARS).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from bulwark.settings import PII_MEMO_CHARS

MIN_CHARS = 4096


class PiiMemo:
    def __init__(self, max_chars: int = PII_MEMO_CHARS, min_chars: int = MIN_CHARS) -> None:
        self._max_chars = max_chars
        self._min_chars = min_chars
        self._entries: OrderedDict[tuple[str, bytes], tuple[str, tuple[str, ...]]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0

    def redact(self, scope: str, text: str) -> tuple[str, tuple[str, ...]]:
        """redact_pii(text), from the memo when `scope` (the caller) had this text scanned before."""
        from bulwark.guardrails.pii import redact_pii  # imported where used: its patterns compile at import

        if self._max_chars <= 0 or not scope or len(text) < self._min_chars:
            return redact_pii(text)
        key = (scope, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        result = redact_pii(text)
        if len(result[0]) <= self._max_chars:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = result
                    self._chars += len(result[0])
                while self._chars > self._max_chars:
                    _key, (old, _kinds) = self._entries.popitem(last=False)
                    self._chars -= len(old)
        return result

    def redact_many(self, scope: str, texts: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        """redact_pii of each text: long ones through the memo, the short ones scanned together (redact_pii_many)."""
        from bulwark.guardrails.pii import redact_pii_many

        if self._max_chars <= 0 or not scope:
            return redact_pii_many(texts)
        short = [text for text in texts if len(text) < self._min_chars]
        found = iter(redact_pii_many(short))
        return [next(found) if len(text) < self._min_chars else self.redact(scope, text) for text in texts]

    @property
    def chars(self) -> int:
        return self._chars
