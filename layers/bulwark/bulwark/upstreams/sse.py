"""OpenAI server-sent events: `data: {chat.completion.chunk}` lines, a blank line after each, `data: [DONE]` at the end.

The decoder is incremental (bytes arrive split anywhere, even inside a UTF-8 sequence) and follows the SSE rules the
OpenAI SDKs rely on: `data:` fields joined by newlines, comments (`:`) and other fields ignored, CR/LF/CRLF line ends.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from bulwark.streaming.framing import DONE_EVENT, encode_event, encode_stream

__all__ = ["DONE", "DONE_EVENT", "SSEDecoder", "decode_chunks", "encode_event", "encode_stream"]

DONE = "[DONE]"


class SSEDecoder:
    """Feed bytes, get the `data` payload of each complete event (strings; `[DONE]` included as is)."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, raw: bytes) -> list[str]:
        self._buffer += self._text.decode(raw)
        events: list[str] = []
        while True:
            line, sep, rest = _split_line(self._buffer)
            if not sep:
                break
            self._buffer = rest
            self._line(line, events)
        return events

    def close(self) -> list[str]:
        """End of input: a final event without its blank line still counts (as browsers' EventSource does not)."""
        self._buffer += self._text.decode(b"", final=True)
        events: list[str] = []
        if self._buffer:
            self._line(self._buffer.removesuffix("\r"), events)
            self._buffer = ""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if line == "":
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)


# A lone CR at the very end is held back: it may be the first half of a CRLF still in flight.
_LINE_END = re.compile(r"\r\n|\n|\r(?=[\s\S])")


def _split_line(buffer: str) -> tuple[str, str, str]:
    match = _LINE_END.search(buffer)
    if match is None:
        return buffer, "", ""
    return buffer[: match.start()], match.group(), buffer[match.end() :]


def decode_chunks(raw: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """JSON objects of an OpenAI stream until `[DONE]`. Raises ValueError on a payload that is not a JSON object."""
    decoder = SSEDecoder()

    def parsed(payloads: list[str]) -> Iterator[dict[str, Any] | None]:
        for payload in payloads:
            if payload.strip() == DONE:
                yield None
                return
            value = json.loads(payload)
            if not isinstance(value, dict):
                raise ValueError("SSE payload is not a JSON object")
            yield value

    for part in raw:
        for item in parsed(decoder.feed(part)):
            if item is None:
                return
            yield item
    for item in parsed(decoder.close()):
        if item is None:
            return
        yield item
