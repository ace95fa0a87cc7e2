"""PII and secrets split across stream pieces never reach the client whole (bulwark.streaming.holdback)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.guardrails.pii import redact_pii
from bulwark.streaming.holdback import WINDOW, StreamRedactor

CARD = "4111 1111 1111 1111"
EMAIL = "bob.smith@example.com"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def five_pieces(text: str, value: str) -> list[str]:
    """`text` cut so that `value` is spread over five pieces."""
    at = text.index(value)
    step = max(1, len(value) // 5)
    cuts = [0, *(at + i * step for i in range(5)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def run(pieces: list[str], mode: str = "redact") -> tuple[list[str], StreamRedactor]:
    redactor = StreamRedactor(mode)
    out = [redactor.feed(p) for p in pieces]
    out.append(redactor.finish())
    return out, redactor


@pytest.mark.parametrize(
    ("value", "text", "kind"),
    [
        (CARD, f"Your card {CARD} is on file.", "payment_card"),
        (EMAIL, f"Write to {EMAIL} today.", "email"),
        (AWS_SECRET, f"Set aws_secret_access_key = {AWS_SECRET} in the profile.", "aws_secret_access_key"),
    ],
)
def test_a_value_split_over_five_pieces_is_replaced_whole(value: str, text: str, kind: str) -> None:
    pieces = five_pieces(text, value)
    assert len([p for p in pieces if set(p) & set(value)]) >= 5

    out, redactor = run(pieces)

    released = "".join(out)
    assert released == redact_pii(text)[0]  # the same answer as the non-streaming path
    assert value not in released
    assert not any(value[:8] in piece for piece in out)  # not even a part of it goes out on its own
    assert kind in redactor.kinds


def test_prose_is_held_back_by_one_word_only() -> None:
    redactor = StreamRedactor("redact")

    assert redactor.feed("The answer is forty") == "The answer is "
    assert redactor.feed("-two, as") == "forty-two, "
    assert redactor.held == len("as")


def test_groups_that_may_be_a_card_or_iban_are_held_together() -> None:
    redactor = StreamRedactor("redact")

    assert redactor.feed("Card 4111 1111 11") == "Card "
    # "IBAN" itself is a group of capitals: held with what follows, as it could have been part of the value
    assert redactor.feed("11 1111 and IBAN GB82 WEST 12") == "[REDACTED:CARD] and "


def test_nothing_is_held_longer_than_the_window() -> None:
    redactor = StreamRedactor("redact")
    token = "x" * 200  # one long word: released once it is WINDOW characters behind

    assert redactor.feed(token) == "x" * (200 - WINDOW)
    assert redactor.held == WINDOW


def test_flag_mode_releases_at_once_and_reports() -> None:
    out, redactor = run(five_pieces(f"Mail {EMAIL} now", EMAIL), mode="flag")

    assert out[:-1] == five_pieces(f"Mail {EMAIL} now", EMAIL)
    assert redactor.kinds == {"email"}


def test_off_passes_through() -> None:
    out, redactor = run(["a 4111 1111", " 1111 1111"], mode="off")
    assert "".join(out) == "a 4111 1111 1111 1111" and not redactor.kinds


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30), repeat=st.integers(1, 3))
def test_any_split_gives_the_whole_text_redacted(cuts: list[int], repeat: int) -> None:
    text = (
        f"Card {CARD}, mail {EMAIL}, aws_secret_access_key={AWS_SECRET}, IBAN GB82 WEST 1234 5698 7654 32, "
        "call +1 (415) 555-0132 now. "
    ) * repeat
    pieces, pos = [], 0
    for c in cuts:
        pieces.append(text[pos : pos + c])
        pos += c
    pieces.append(text[pos:])

    out, _ = run([p for p in pieces if p])

    assert "".join(out) == redact_pii(text)[0]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=" \n\tab1.", max_size=80), cuts=st.lists(st.integers(min_value=0, max_value=80)))
def test_the_token_tally_counts_a_text_in_pieces_as_it_counts_it_whole(text: str, cuts: list[int]) -> None:
    from bulwark.upstreams.base import TextTally, estimate_tokens

    tally = TextTally()
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    for a, b in itertools.pairwise(points):
        tally.add(text[a:b])

    assert tally.tokens == estimate_tokens(text)  # the stream's estimate keeps no text, and is the same number
