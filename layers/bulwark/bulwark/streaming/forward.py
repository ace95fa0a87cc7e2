"""The validator's side of a stream: read the invoker's hop records, hand the client its SSE bytes as they come, and
report once, whatever ends the stream, what to settle.

`open_forward` reads up to the first record before anything is promised to the client, so an error the invoker
reports before the first chunk is still an ordinary error response. After that the status is 200 and every ending is
settled by `on_end(used_tokens, usage, hits, error_code)`:
- `end` record: the invoker's usage (upstream-reported, or estimated from what was generated);
- the invoker's stream breaks (it died, a transport fault): what was forwarded, estimated, plus the prompt; the client
  gets an upstream_error event;
- the client goes away (GeneratorExit): the same estimate, and the invoker's stream is closed, which stops the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bulwark.errors import UpstreamError
from bulwark.services.invoker_client import InvokerResponse, InvokerUsage
from bulwark.streaming.framing import error_event
from bulwark.streaming.hop import RecordReader

OnEnd = Callable[[InvokerResponse, str], None]  # (result to settle, how the stream ended)


@dataclass
class _Relayed:
    content_chars: int = 0
    ended: InvokerResponse | None = None
    pending: list[bytes] = field(default_factory=list)


def _content_chars(event: str) -> int:
    """Characters of model text in one forwarded chunk (for the estimate when no usage record arrives)."""
    if not event.startswith("data: {"):
        return 0
    try:
        chunk = json.loads(event[6:])
    except ValueError:
        return 0
    return sum(len((c.get("delta") or {}).get("content") or "") for c in chunk.get("choices") or [])


class Forward:
    def __init__(self, stream: Any, prompt_estimate: int) -> None:
        self._stream = stream
        self._pieces = iter(stream)
        self._reader = RecordReader()
        self._prompt = prompt_estimate
        self._state = _Relayed()

    def first(self) -> InvokerResponse | None:
        """Read until the first record. The invoker's result if the stream ended there (an error before any chunk),
        else None: the stream has started. Raises UpstreamError if the invoker's stream broke before any record."""
        try:
            while not self._state.pending and self._state.ended is None:
                piece = next(self._pieces)
                self._take(piece)
        except StopIteration:
            self._stream.close()
            raise UpstreamError() from None
        except Exception:
            self._stream.close()
            raise UpstreamError() from None
        if self._state.ended is not None and not self._state.pending:
            self._stream.close()
            return self._state.ended
        return None

    def _take(self, piece: bytes) -> None:
        for record in self._reader.feed(piece):
            if "sse" in record:
                event = str(record["sse"])
                self._state.content_chars += _content_chars(event)
                self._state.pending.append(event.encode("utf-8"))
            elif "end" in record:
                self._state.ended = InvokerResponse.model_validate(record["end"])

    def body(self, on_end: OnEnd) -> _Body:
        return _Body(self, on_end)

    def _body(self, on_end: OnEnd) -> Iterator[bytes]:
        how = "disconnected"
        try:
            while True:
                while self._state.pending:
                    yield self._state.pending.pop(0)
                if self._state.ended is not None:
                    how = "completed"
                    break
                try:
                    piece = next(self._pieces)
                except StopIteration:
                    how = "broken"
                    break
                except Exception:
                    how = "broken"
                    break
                self._take(piece)
            if how == "broken":
                yield error_event(UpstreamError())
        finally:
            self._stream.close()
            on_end(self._state.ended or self._estimate(), how)

    def _estimate(self) -> InvokerResponse:
        completion = (self._state.content_chars + 3) // 4  # estimate_tokens' rate: ~4 characters a token
        usage = InvokerUsage(prompt_tokens=self._prompt, completion_tokens=completion, estimated=True)
        return InvokerResponse(ok=True, content_type="text/event-stream", usage=usage)

    def abandon(self, on_end: OnEnd) -> None:
        """The reader went away before the body was read at all."""
        self._stream.close()
        on_end(self._state.ended or self._estimate(), "disconnected")


class _Body:
    """The forwarded body. close() settles even when iteration never began (a generator's cleanup would not run)."""

    def __init__(self, forward: Forward, on_end: OnEnd) -> None:
        self._forward = forward
        self._on_end = on_end
        self._gen: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._gen is None:
            self._gen = self._forward._body(self._on_end)
        return next(self._gen)

    def close(self) -> None:
        if self._gen is None:
            self._gen = iter(())
            self._forward.abandon(self._on_end)
            return
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()
