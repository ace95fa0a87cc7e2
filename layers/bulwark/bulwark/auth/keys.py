"""API key format, generation, parsing and keyed hashing.

Format: ``bwk_<key id>_<secret><checksum>``
- ``bwk_``: fixed prefix, so secret scanners can find leaked keys;
- key id: 12 base62 characters, the record's id (one lookup finds it);
- secret: 43 base62 characters from `secrets` (62**43 > 2**256, so at least 256 bits of randomness);
- checksum: 6 base62 characters of CRC32 over everything before it, so a mistyped or random string is refused without
  touching the store. The checksum is not a security control; the secret is.

Only HMAC-SHA-256(server secret, key id + ":" + secret) is ever stored. Comparison is constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "bwk_"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LEN = 12
SECRET_LEN = 43
CHECKSUM_LEN = 6
KEY_LEN = len(PREFIX) + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
_KEY_RE = re.compile(rf"bwk_([0-9A-Za-z]{{{KEY_ID_LEN}}})_([0-9A-Za-z]{{{SECRET_LEN}}})([0-9A-Za-z]{{{CHECKSUM_LEN}}})")
_KEY_ID_RE = re.compile(rf"[0-9A-Za-z]{{{KEY_ID_LEN}}}")


@dataclass(frozen=True, repr=False)
class ParsedKey:
    key_id: str
    secret: str

    def __repr__(self) -> str:  # never show the secret, not even in a traceback
        return f"ParsedKey(key_id={self.key_id!r}, secret=<redacted>)"


def _random_base62(n: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(n))


def _base62_fixed(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(BASE62[rem])
    return "".join(reversed(out))


def checksum(body: str) -> str:
    return _base62_fixed(zlib.crc32(body.encode("ascii")), CHECKSUM_LEN)


def new_key_id() -> str:
    return _random_base62(KEY_ID_LEN)


def new_api_key(key_id: str | None = None) -> tuple[str, ParsedKey]:
    """A fresh key string (shown once) and its parsed parts."""
    kid = key_id or new_key_id()
    if not _KEY_ID_RE.fullmatch(kid):
        raise ValueError("key id must be 12 base62 characters")
    secret = _random_base62(SECRET_LEN)
    body = f"{PREFIX}{kid}_{secret}"
    return body + checksum(body), ParsedKey(kid, secret)


def parse_api_key(candidate: str) -> ParsedKey | None:
    """The key's parts, or None if the string is not a well-formed key with a valid checksum (no store access)."""
    if len(candidate) != KEY_LEN:
        return None
    m = _KEY_RE.fullmatch(candidate)
    if m is None:
        return None
    body = candidate[:-CHECKSUM_LEN]
    if not hmac.compare_digest(checksum(body), m.group(3)):
        return None
    return ParsedKey(m.group(1), m.group(2))


def looks_like_api_key(candidate: str) -> bool:
    return candidate.startswith(PREFIX)


def is_key_id(candidate: str) -> bool:
    return _KEY_ID_RE.fullmatch(candidate) is not None


def hash_secret(pepper: bytes, key: ParsedKey) -> str:
    """HMAC-SHA-256 under the server-side secret, hex. Binding the key id stops a hash being moved between records."""
    return hmac.new(pepper, f"{key.key_id}:{key.secret}".encode("ascii"), hashlib.sha256).hexdigest()


def matches(pepper: bytes, key: ParsedKey, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(pepper, key), stored_hash)
