"""OpenAI server-sent events: encoding, and incremental decoding that survives any split of the byte stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulwark.upstreams import sse

CHUNKS: list[dict[str, Any]] = [
    {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "héllo 👋"}}]},
    {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "line\nbreak"}}]},
    {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1}},
]
# The stream the invoker writes: one event per chunk, then the [DONE] sentinel.
STREAM = b"".join(sse.encode_event(chunk) for chunk in CHUNKS) + sse.DONE_EVENT


def test_encoding_is_one_data_line_per_event_and_ends_with_done() -> None:
    raw = STREAM
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")[:-1]
    assert len(events) == 4 and all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    assert json.loads(events[0][6:]) == CHUNKS[0]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_decoding_is_independent_of_how_bytes_are_split(sizes: list[int]) -> None:
    raw = STREAM
    parts, i = [], 0
    for size in sizes:
        parts.append(raw[i : i + size])
        i += size
    parts.append(raw[i:])
    assert list(sse.decode_chunks(parts)) == CHUNKS


def test_sse_rules_crlf_comments_multiline_and_other_fields() -> None:
    raw = (
        b": keep-alive\r\n\r\n"
        b'event: message\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b'retry: 100\rdata:{"b":2}\r\r'
        b"data: [DONE]\n\n"
        b'data: {"after": "done is ignored"}\n\n'
    )
    assert list(sse.decode_chunks([raw])) == [{"a": 1}, {"b": 2}]


def test_a_final_event_without_blank_line_still_counts() -> None:
    assert list(sse.decode_chunks([b'data: {"a": 1}'])) == [{"a": 1}]


@pytest.mark.parametrize("payload", [b"data: [1, 2]\n\n", b"data: {nope\n\n"])
def test_non_object_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        list(sse.decode_chunks([payload]))


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(UnicodeDecodeError):
        list(sse.decode_chunks([b'data: {"a": "\xff"}\n\n']))
