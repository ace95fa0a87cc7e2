"""The validator ← invoker hop of a stream: newline-delimited JSON records inside the invoker's response stream.

    {"sse": "<client SSE text>"}       zero or more, in order: forwarded to the client as they arrive
    {"end": {<InvokerResponse>}}       last: ok/error, usage to settle, output hits, upstream_ms (body empty)

An `end` with ok=false and no `sse` before it is an ordinary error (the validator answers 4xx/5xx, nothing was
streamed yet). A stream that stops without `end` (the invoker died) is settled by the validator from what it relayed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def sse_record(event: bytes) -> bytes:
    return json.dumps({"sse": event.decode("utf-8")}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def end_record(response_json: str) -> bytes:
    return b'{"end":' + response_json.encode("utf-8") + b"}\n"


class RecordReader:
    """Bytes of the invoker's stream in, parsed records out (a record may arrive split over many payload chunks)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buf += data
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if not sep:
                return
            self._buf = rest
            if line:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("hop record is not an object")
                yield record
