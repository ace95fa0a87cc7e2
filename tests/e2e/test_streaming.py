"""Real streaming through `bulwark local` (issue 18): tokens reach the client as the model writes them.

The demo model writes one token every 50 ms here; the tests time each chunk's arrival at the client (the openai SDK's
streaming iterator and a raw chunked HTTP client) and fail if the chunks arrive together, as they did when the whole
answer was buffered. The stream also settles: the audit record of a finished, and of an abandoned, stream counts
the tokens the model wrote, and an abandoned stream stops the model.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from tests.e2e.keys import create_key

pytestmark = pytest.mark.e2e
TOKEN_DELAY = 0.05
WORDS = " ".join(f"w{i}" for i in range(30))  # ~30 tokens after the echo prefix: about 2 s at 50 ms each


@pytest.fixture(scope="module")
def key(local_stack: Any) -> str:
    return create_key(local_stack.env)[0]


@pytest.fixture
def paced(local_stack: Any) -> Iterator[Any]:
    demo = local_stack.stack.demo_server
    demo.token_delay = TOKEN_DELAY
    yield demo
    demo.token_delay, demo.repeat = 0.0, 1


def spread(arrivals: list[float]) -> tuple[float, list[float]]:
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return arrivals[-1] - arrivals[0], gaps


def assert_paced(arrivals: list[float], tokens: int) -> None:
    """Arrival times of the content chunks: spread over (nearly) the time the model took to write them."""
    total, gaps = spread(arrivals)
    assert len(arrivals) >= 10, arrivals
    # Buffered, every chunk lands within a millisecond or two of the first; streamed, they follow the model's pace.
    assert total >= 0.6 * TOKEN_DELAY * (tokens - 1) * (len(arrivals) / tokens), (total, len(arrivals))
    paced_gaps = [g for g in gaps if g >= TOKEN_DELAY * 0.5]
    assert len(paced_gaps) >= 0.6 * len(gaps), gaps


def test_openai_sdk_iterator_receives_chunks_as_they_are_produced(local_stack: Any, key: str, paced: Any) -> None:
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key)
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="demo-echo",
        messages=[{"role": "user", "content": WORDS}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[float] = []
    text = ""
    last = None
    for chunk in stream:
        last = chunk
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - started)
            text += chunk.choices[0].delta.content

    assert text == "Echo from the Bulwark demo model: " + WORDS
    assert_paced(arrivals, 36)
    assert last is not None and last.usage is not None and last.usage.completion_tokens > 0  # include_usage


def _raw_stream(local_stack: Any, key: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A streamed chat over a plain HTTP/1.1 connection: the connection and its response, the body not yet read."""
    url = urlsplit(local_stack.base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    body = json.dumps({"model": "demo-echo", "messages": [{"role": "user", "content": WORDS}], "stream": True})
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    return conn, conn.getresponse()


def test_raw_chunked_client_sees_sse_pieces_as_they_come(local_stack: Any, key: str, paced: Any) -> None:
    started = time.perf_counter()
    conn, response = _raw_stream(local_stack, key)
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked" and response.getheader("Content-Length") is None
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.getheader("x-request-id")
    assert response.getheader("x-ratelimit-remaining-requests") is not None
    arrivals: list[float] = []
    raw = b""
    while piece := response.read1(65536):  # as curl -N: whatever has arrived, as soon as it has
        raw += piece
        if b'"content"' in piece:
            arrivals.append(time.perf_counter() - started)
    conn.close()

    assert raw.endswith(b"data: [DONE]\n\n")
    assert_paced(arrivals, 36)


def audit_for(local_stack: Any, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in local_stack.log_lines:
            if request_id in line and '"audit"' in line:
                record: dict[str, Any] = json.loads(line[line.index("{") :])["audit"]
                return record
        time.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


def test_a_finished_stream_settles_the_model_usage(local_stack: Any, key: str) -> None:
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=key)
    raw = client.chat.completions.with_raw_response.create(
        model="demo-echo", messages=[{"role": "user", "content": "count me"}], stream=True
    )
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)  # include_usage not asked: no usage chunk

    audit = audit_for(local_stack, raw.headers["x-request-id"])
    assert audit["verdicts"]["stream"] == "completed"
    assert audit["completion_tokens"] == len(["Echo", "from", "the", "Bulwark", "demo", "model:", "count", "me"])
    assert audit["usage_estimated"] is False


def test_a_client_that_goes_away_stops_the_model_and_what_was_written_is_counted(
    local_stack: Any, key: str, paced: Any
) -> None:
    paced.repeat = 20  # ~700 tokens: 35 s at 50 ms, far more than this test waits
    cut_before = paced.streams_cut
    conn, response = _raw_stream(local_stack, key)
    request_id = response.getheader("x-request-id") or ""
    seen = b""
    while seen.count(b'"content"') < 5:
        seen += response.read1(65536)
    conn.close()  # the client goes away mid-stream

    audit = audit_for(local_stack, request_id, timeout=10.0)
    assert audit["verdicts"]["stream"] == "disconnected"
    assert 5 <= audit["completion_tokens"] < 200  # what was written before the cut, not the reservation
    deadline = time.monotonic() + 5
    while paced.streams_cut == cut_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paced.streams_cut == cut_before + 1  # the model's stream was stopped, not run to its end
