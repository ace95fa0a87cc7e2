"""The anchors and shortcuts that make the PII scanner fast on digit-dense text find exactly what the reference finds
(tests/unit/pii_reference.py: every pattern with `finditer` over the whole text): the largest requests of
bench/validator_bench.py, and generated texts built from the shapes each shortcut reasons about (the dash that leads
an SSN, the dot that leads an IPv4 address, the "00" every phone shape holds, whole credential keywords, the same
number found by several phone scanners, ASCII card prefixes compared as strings)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.guardrails import pii
from bulwark.guardrails.pii import redact_pii, redact_pii_many
from tests.unit.pii_reference import numeric_iin_ok, reference_find, reference_redact, scanner_find

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_paragraphs() -> dict[str, str]:
    """The five kinds of text of the validator benchmark's table (bench/ is a directory of scripts, not a package)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        bench = importlib.import_module("validator_bench")
    kinds: dict[str, str] = dict(bench.KINDS)
    return kinds


def _max_size_texts(paragraph: str, messages: int, parts: int) -> list[str]:
    """The message texts of validator_bench.at_default_caps: 200,000 characters shared evenly, each text starting at
    a different place in the paragraph."""
    per_text = min(32_000 // parts, 200_000 // (messages * parts))
    texts = []
    for i in range(messages * parts):
        start = i * 7 % len(paragraph)
        rotated = paragraph[start:] + paragraph[:start]
        texts.append((rotated * (per_text // len(rotated) + 1))[:per_text])
    return texts


def test_the_benchmark_texts_are_redacted_as_the_reference_does(bench_paragraphs: dict[str, str]) -> None:
    assert len(bench_paragraphs) == 5
    for name, paragraph in bench_paragraphs.items():
        texts = _max_size_texts(paragraph, 64, 1)
        assert redact_pii_many(texts) == [reference_redact(text) for text in texts], name
        joined = pii._JOIN.join(_max_size_texts(paragraph, 7, 1))  # one scan of 200,000 characters, as the validator
        assert scanner_find(joined) == reference_find(joined), name


# Shapes next to and inside one another: whole ones, near misses (an octet over 255, a leading zero, a dash too many),
# and the separators and letters around them that lookarounds read.
DIGIT_PIECES = [
    *("10.0.4.17", "172.16.9.3", "1.2.3.4", "256.1.1.1", "1.02.3.4", "1.2.3", "1.2.3.4.5", "0.0.0.0", "999.9.9.9"),
    *("123-45-6789", "000-12-3456", "123-00-4567", "1234-56-7890", "12-34-5678", "666-12-3456"),
    *("4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "378282246310005", "5555 5555 5555 4444"),
    *("4444444444444", "0000 0000 0000 0000", "6011 0009 9013 9424", "3530111333300000"),
    *("+1 415-555-0132", "(212) 555-0199", "415.555.0132", "06 95 18 18 33", "01632 960848", "(0808)1570623"),
    *("+4915123456789", "+44 20 7946 0958 x12", "+33 1 23 45 67 89", "00 44 20 7946 0958", "555-0132"),
    *("01 234567", "02-1234567", "(01) 2345678", "(20)12345678", "(0808) 157062", "0 12345", "1 2 3 4 5 6 7 8"),
    *("2024-05-17T12:04:33.512Z", "12:04:33", "v1.2.3", "4.5%", "$12,480", "48213", "7731", "\u0661\u0662\u0663"),
    *("GB82 WEST 1234 5698 7654 32", "AB 12 34 56 C", "fe80::1", "2001:db8:0:0:0:0:2:1"),
    *("call ", "call me at ", "tel: ", "phone ", " or ", "; ", ", ", "Card ", "ip=", "invoice "),
    *(" ", "  ", "\n", ".", "-", "--", "+", "(", ")", ":", "0", "00", "5", "x", "a", "Z", "_", "\u00e9", "\x00"),
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(DIGIT_PIECES), min_size=200, max_size=400))
def test_long_digit_dense_texts_are_found_as_the_reference_finds(pieces: list[str]) -> None:
    # Long enough for the dense fallbacks: finditer over the whole text instead of match at each candidate.
    text = " ".join(pieces)
    assert scanner_find(text) == reference_find(text)


CREDENTIAL_PIECES = [
    *("api", "API", "api_key", "API-KEY", "apikey", "Api_Key", "access_token", "ACCESSTOKEN", "access-", "auth"),
    *("auth_token", "AUTH-TOKEN", "client_secret", "clientsecret", "Client-", "secret", "secret_key", "SECRET-KEY"),
    *("password", "PASSWD", "passw", "Password", "\u017fecret_key", "\u0130", "/api/v2/orders", "aws", "_"),
    *("=", ":", " = ", ": ", "'", '"', " ", "\t", "\n", "hunter2hunter2", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
]


@pytest.mark.parametrize("pieces", [DIGIT_PIECES, CREDENTIAL_PIECES], ids=["digit shapes", "credential keywords"])
@settings(max_examples=1_500, deadline=None)
@given(data=st.data())
def test_texts_made_of_the_shapes_are_found_as_the_reference_finds(pieces: list[str], data: st.DataObject) -> None:
    text = "".join(data.draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=24)))
    assert scanner_find(text) == reference_find(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(DIGIT_PIECES + CREDENTIAL_PIECES), max_size=10).map("".join), max_size=8))
def test_texts_scanned_together_are_redacted_as_the_reference_redacts_each(texts: list[str]) -> None:
    assert redact_pii_many(texts) == [reference_redact(text) for text in texts]
    assert [redact_pii(text) for text in texts] == [reference_redact(text) for text in texts]


def test_the_same_number_found_by_three_phone_scanners_is_one_finding() -> None:
    text = "call +1 415-555-0132 or (212) 555-0199"
    found = pii._candidates(text)
    assert found["phone_intl"] == found["phone_cue"] == [(5, 20)]  # the cue's number and the '+'-led one: one span
    assert scanner_find(text) == reference_find(text)
    assert reference_find(text) == [("phone", 5, 20), ("phone", 24, 38)]


@settings(max_examples=2_000, deadline=None)
@given(
    st.sampled_from(["4", "34", "37", "30", "35", "36", "38", "1800", "2131", "2221", "2720", "2721", "51", "62", "9"]),
    st.text(alphabet="0123456789", min_size=9, max_size=18),
)
def test_ascii_card_prefixes_compared_as_strings_agree_with_their_numbers(prefix: str, rest: str) -> None:
    digits = (prefix + rest)[:19]
    assert pii._iin_ok(digits) == numeric_iin_ok(digits)


def test_a_card_number_in_another_scripts_digits_is_checked_by_its_values() -> None:
    """`\\d` takes Arabic-Indic digits too; the Luhn check once read them by code point, so such a card went
    unredacted."""
    arabic_indic = str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))
    card = "4111 1111 1111 1111".translate(arabic_indic)
    assert pii.redact_pii(f"card {card} please") == ("card [REDACTED:CARD] please", ("payment_card",))
    not_luhn = card[:-1] + "\u0662"
    assert pii.redact_pii(f"card {not_luhn} please")[1] != ("payment_card",)


def test_a_card_number_that_is_a_whole_run_spares_the_phone_scan_only_when_nothing_earlier_overlaps_it() -> None:
    found = {"email": [(10, 20)], "payment_card": [(0, 12), (30, 46), (50, 66)], "iban": [(64, 90)]}
    runs = {(0, 12), (30, 46), (48, 66), (70, 80)}
    # (0, 12) is beaten by the email, (50, 66) is not a whole run (and an IBAN overlaps it): only (30, 46) is spared
    assert pii._unbeaten_runs(found, "payment_card", runs) == {(30, 46)}
    assert pii._unbeaten_runs({"payment_card": [(0, 12)]}, "payment_card", runs) == {(0, 12)}
    assert pii._unbeaten_runs({"email": [(0, 40)], "payment_card": [(0, 12), (30, 46)]}, "payment_card", runs) == set()


def test_a_text_of_card_numbers_and_phones_is_found_as_the_reference_finds() -> None:
    text = "4111 1111 1111 1111 then (212) 555-0199, a@4111 1111 1111 1111.io and x 4111 1111 1111 1111@y.io " * 3
    assert scanner_find(text) == reference_find(text)


@settings(max_examples=2_000, deadline=None)
@given(st.text(alphabet="0123456789 +-().x\u00b2\u0661\u00e9a", max_size=30))
def test_the_digits_of_a_phone_number_are_counted_as_isdigit_counts_them(number: str) -> None:
    assert pii._digit_count(number) == sum(c.isdigit() for c in number.partition("x")[0])
