"""The AWS event-stream framing (application/vnd.amazon.eventstream) that Lambda InvokeWithResponseStream answers in.

message = total length, headers length (uint32 BE), prelude CRC32, headers, payload, message CRC32 (over every byte
before it). Only string headers (type 7) are written; the decoder reads every header type's length to skip them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

CONTENT_TYPE = "application/vnd.amazon.eventstream"
MAX_MESSAGE = 16 * 1024 * 1024  # the format's own limit


class EventStreamError(ValueError):
    """A malformed or corrupt message."""


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    head = b"".join(
        struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
        for n, v in ((k.encode(), val.encode()) for k, val in headers.items())
    )
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    return encode({":event-type": event_type, ":content-type": content_type, ":message-type": "event"}, payload)


# Value lengths of the fixed-size header types (bool true/false carry none); 6 and 7 are length-prefixed.
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        n = raw[pos]
        name = raw[pos + 1 : pos + 1 + n].decode()
        kind = raw[pos + 1 + n]
        pos += 2 + n
        if kind in (6, 7):
            (size,) = struct.unpack_from(">H", raw, pos)
            value = raw[pos + 2 : pos + 2 + size]
            pos += 2 + size
            if kind == 7:
                out[name] = value.decode()
        elif kind in _FIXED:
            pos += _FIXED[kind]
        else:
            raise EventStreamError("unknown header type")
    return out


class Decoder:
    """Feed bytes as they arrive; get (headers, payload) for each complete message."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
        self._buf += data
        while len(self._buf) >= 12:
            total, head_len, prelude_crc = struct.unpack_from(">III", self._buf)
            if zlib.crc32(bytes(self._buf[:8])) != prelude_crc or not 16 <= total <= MAX_MESSAGE:
                raise EventStreamError("bad prelude")
            if len(self._buf) < total:
                return
            message = bytes(self._buf[:total])
            del self._buf[:total]
            if zlib.crc32(message[:-4]) != struct.unpack(">I", message[-4:])[0]:
                raise EventStreamError("bad message checksum")
            yield _headers(message[12 : 12 + head_len]), message[12 + head_len : -4]

    @property
    def pending(self) -> int:
        return len(self._buf)
