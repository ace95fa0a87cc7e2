"""PII and secret redaction on a stream of text pieces, with a bounded hold-back window.

A value can arrive split over many pieces ("4111 ", "1111 ", ...). What is held back is the tail that could still
be the start of one: the last word (no value the detectors find has a space in it) together with the groups of
capitals, digits and brackets before it that a card, IBAN or phone number writes with spaces or dashes ("4111 1111",
"GB82 WEST 1234", "+1 (555) 123"), and never more than WINDOW characters. Everything before it is released, so
prose flows with a delay of one word. A release point never falls inside a finding, so a value is replaced whole.
The last CONTEXT characters already released are scanned again with the held text (never re-sent), so a label the
detectors need ("aws_secret_access_key = ") still counts when its value arrives later; a finding that starts inside
that context has its held part replaced. Each piece costs one scan of at most CONTEXT + WINDOW + the piece.

The bound: text reaches the client at most WINDOW characters (about 16 tokens) after the model wrote it, and what
is held goes out when the model finishes. A value longer than WINDOW (a very long e-mail address, a bearer token) is
still replaced once seen whole, but its first characters may have gone out.
"""

from __future__ import annotations

import re

# 64 characters hold a card number with separators (at most 37), an IBAN (at most 42), an AWS access key id (20),
# an AWS secret access key (40; its label is in the context), a phone number, an SSN and ordinary e-mail addresses.
WINDOW = 64
CONTEXT = 64
# The tail that may still be growing into a value: space- or dash-separated groups of capitals, digits and brackets
# (card, IBAN and phone groups), then the last word. Searched from WINDOW characters before the end: the leftmost
# match is the longest such tail.
_TAIL = re.compile(r"(?:[0-9A-Z()+]{1,8}[ .\-]{1,2})*\S*\Z")


class StreamRedactor:
    """Feed text pieces of one choice, get what may be released now; `finish()` releases the rest.

    Modes as for whole answers: `redact` replaces findings with typed placeholders (held back by WINDOW);
    `flag` releases at once and only reports kinds; `off` passes through.
    """

    def __init__(self, mode: str, *, window: int = WINDOW, context: int = CONTEXT, hold: bool = False) -> None:
        """`hold`: hold the tail back whatever the mode (the system-prompt canary is checked before release)."""
        self.mode = mode
        self.kinds: set[str] = set()
        self._window = window if (mode == "redact" or hold) else 0
        self._context_size = context
        self._context = ""  # released raw text, kept for the detectors' lookbehind
        self._held = ""

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, piece: str) -> str:
        if (self.mode == "off" and not self._window) or not piece:
            return piece
        self._held += piece
        return self._release(final=False)

    def finish(self) -> str:
        if self.mode == "off" and not self._window:
            return ""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        # Imported here: the detectors load with the first filtered stream, not at the invoker's cold start.
        from bulwark.guardrails.pii import find_pii, placeholder

        ctx = len(self._context)
        buf = self._context + self._held
        findings = find_pii(buf) if self.mode != "off" else []
        self.kinds.update(f.kind for f in findings if f.end > ctx)
        if final:
            cut = len(buf)
        elif self._window:
            tail = _TAIL.search(buf, max(ctx, len(buf) - self._window))
            cut = tail.start() if tail else len(buf) - self._window
        else:
            cut = len(buf)
        for f in findings:
            if f.start < cut < f.end:
                cut = f.start  # never release part of a finding
        if cut <= ctx:
            return ""
        if self.mode == "redact":
            out: list[str] = []
            pos = ctx
            for f in findings:
                if f.end <= ctx or f.start >= cut:
                    continue
                out.append(buf[pos : max(f.start, ctx)])
                out.append(placeholder(f.kind))
                pos = f.end
            out.append(buf[pos:cut])
            released = "".join(out)
        else:
            released = buf[ctx:cut]
        self._context = buf[max(0, cut - self._context_size) : cut]
        self._held = buf[cut:]
        return released
