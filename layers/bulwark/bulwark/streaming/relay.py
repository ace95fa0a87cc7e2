"""The invoker's stream relay: upstream chunks in, client SSE bytes out, each chunk as soon as the guardrails allow.

- PII and secrets: one StreamRedactor per choice (bounded hold-back window, see holdback.py).
- Bedrock guardrail (when the role names one): released text is checked in segments of GUARD_SEGMENT characters
  before it goes out; a block ends the stream with an error event in OpenAI's shape, and the reason is logged.
- Usage: taken from the upstream's final chunk when it reports one; otherwise (and when the stream ends early: an
  upstream failure, a block, the client going away) estimated from the text generated so far, so what the model
  wrote is always counted. `outcome` holds the result for whoever settles it.
- The upstream call is closed whenever the relay stops early (GeneratorExit when the reader disconnects).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bulwark.errors import BulwarkError, ContentPolicyViolation, UpstreamError
from bulwark.streaming.framing import DONE_EVENT, chunk_event, error_event, usage_event
from bulwark.streaming.holdback import StreamRedactor
from bulwark.upstreams.base import TextTally

GUARD_SEGMENT = 512  # characters per ApplyGuardrail call on a stream: fewer calls, one segment of latency


@dataclass
class StreamOutcome:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = True
    hits: list[str] = field(default_factory=list)
    error: BulwarkError | None = None
    completed: bool = False  # [DONE] was sent
    disconnected: bool = False
    generated_chars: int = 0


class _Choice:
    def __init__(self, mode: str, canary: str | None) -> None:
        self.redactor = StreamRedactor(mode, hold=canary is not None)
        self.unchecked = ""  # released by the redactor, waiting for the Bedrock guardrail
        self.generated = TextTally()  # what the model wrote, counted, not kept
        self.recent = ""  # the newest text, for the canary check


# The canary check reads the newest text this long: the canary (20 characters) even when spaced out.
CANARY_WINDOW = 96


def relay_chat(
    chunks: Any,
    *,
    model: str,
    pii_mode: str,
    include_usage: bool,
    prompt_estimate: int,
    outcome: StreamOutcome,
    guardrail: Any | None = None,
    log: logging.Logger | Any | None = None,
    canary: str | None = None,
) -> Iterator[bytes]:
    """`chunks`: the upstream's ChatStream (OpenAI chunk dicts, the last one carrying `usage`)."""
    choices: dict[int, _Choice] = {}
    last: dict[str, Any] = {}
    try:
        for chunk in chunks:
            last = chunk
            out = [
                shaped
                for choice in chunk.get("choices") or []
                if (shaped := _shape(choice, choices, pii_mode, guardrail, outcome, canary)) is not None
            ]
            if out:
                yield chunk_event(chunk, out, include_usage=include_usage)
        _settle(outcome, choices, getattr(chunks, "usage", None), prompt_estimate)
        if include_usage:
            yield usage_event(
                chunk_id=str(last.get("id", "")),
                created=int(last.get("created", 0) or 0),
                model=model,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
            )
        outcome.completed = True
        yield DONE_EVENT
    except GeneratorExit:
        outcome.disconnected = True
        _settle(outcome, choices, None, prompt_estimate)
        raise
    except BulwarkError as exc:
        outcome.error = exc
        _settle(outcome, choices, None, prompt_estimate)
        if log is not None:
            log.warning("stream ended early", extra={"model": model, "code": exc.code, "reason": exc.message})
        yield error_event(exc)
    except Exception:
        if log is not None:
            log.exception("stream relay failed")
        outcome.error = UpstreamError()
        _settle(outcome, choices, None, prompt_estimate)
        yield error_event(outcome.error)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stops the model call when the stream ends early; harmless after a full stream
        for state in choices.values():
            outcome.hits.extend(sorted(state.redactor.kinds - set(outcome.hits)))


def _shape(
    choice: dict[str, Any],
    choices: dict[int, _Choice],
    mode: str,
    guardrail: Any | None,
    outcome: StreamOutcome,
    canary: str | None,
) -> dict[str, Any] | None:
    idx = int(choice.get("index", 0))
    state = choices.setdefault(idx, _Choice(mode, canary))
    delta = dict(choice.get("delta") or {})
    finished = choice.get("finish_reason") is not None
    if isinstance(delta.get("content"), str):
        piece = delta["content"]
        state.generated.add(piece)
        outcome.generated_chars += len(piece)
        if canary is not None:
            _check_canary(state, piece, canary, outcome)
        released = state.redactor.feed(piece)
    else:
        released = ""
    if finished:
        released += state.redactor.finish()
    if guardrail is not None:
        released = _guarded(state, released, guardrail, force=finished, outcome=outcome)
    if "content" in delta or released:
        if released:
            delta["content"] = released
        else:
            del delta["content"]
    if not delta and not finished:
        return None  # everything this chunk said is held back for now
    return {**choice, "delta": delta}


def _check_canary(state: _Choice, piece: str, canary: str, outcome: StreamOutcome) -> None:
    """The model repeating its system prompt's canary ends the stream before the canary goes out (it is held back as
    the last word until then): as the non-streaming path withholds such an answer (bulwark.guardrails.canary)."""
    from bulwark.guardrails.canary import HIT, leaked

    state.recent = (state.recent + piece)[-CANARY_WINDOW:]
    if leaked(state.recent, canary):
        outcome.hits.append(HIT)
        raise ContentPolicyViolation("The response was stopped by the content policy (rule: system_prompt_canary).")


def _guarded(state: _Choice, released: str, guardrail: Any, *, force: bool, outcome: StreamOutcome) -> str:
    state.unchecked += released
    if not state.unchecked or (len(state.unchecked) < GUARD_SEGMENT and not force):
        return ""
    blocked, reasons = guardrail.check([state.unchecked], source="OUTPUT")
    if blocked:
        outcome.hits.append("bedrock_guardrail")
        raise ContentPolicyViolation(
            f"The response was stopped by the content policy (rule: bedrock_guardrail:{','.join(reasons)})."
        )
    text, state.unchecked = state.unchecked, ""
    return text


def _settle(outcome: StreamOutcome, choices: dict[int, _Choice], reported: Any, prompt_estimate: int) -> None:
    if reported is not None:  # the adapter's Usage: reported by the upstream, or its own estimate (said so)
        outcome.prompt_tokens = int(reported.prompt_tokens)
        outcome.completion_tokens = int(reported.completion_tokens)
        outcome.estimated = bool(reported.estimated)
        return
    # No report from the upstream (or the stream ended early): count what was generated.
    outcome.prompt_tokens = prompt_estimate
    outcome.completion_tokens = sum(s.generated.tokens for s in choices.values())
    outcome.estimated = True
