import time

import pytest

from bulwark.errors import InvalidJson, RequestTooLarge
from bulwark.validation.jsonparse import parse_json_body

LIMITS = {"max_bytes": 1_048_576, "max_depth": 32, "max_number_digits": 40}


def parse(body: bytes) -> object:
    return parse_json_body(body, **LIMITS)


def test_given_a_valid_object_when_parsed_then_it_is_returned() -> None:
    assert parse(b' {"a": [1, 2.5, "x\\u00e9", true, null]} ') == {"a": [1, 2.5, "xé", True, None]}


def test_given_a_body_over_the_cap_when_parsed_then_too_large_before_parsing() -> None:
    with pytest.raises(RequestTooLarge):
        parse_json_body(b"[" * 101, max_bytes=100, max_depth=32, max_number_digits=40)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "UTF-8"),  # an encoded surrogate is invalid UTF-8
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate"),
        (b'{"a": NaN}', "NaN"),
        (b"[Infinity]", "NaN"),
        (b"[-Infinity]", "NaN"),
        (b"[1e999]", "too large"),
        (b"[" + b"1" * 41 + b"]", "digits"),
        (b"[-" + b"1" * 41 + b"]", "digits"),
        (b"[0." + b"1" * 41 + b"]", "digits"),
        (b'["\\ud800"]', "surrogate"),
        (b'{"\\udc00": 1}', "surrogate"),
        (b'["\\ud800x"]', "surrogate"),
        (b"{} x", "syntax"),
        (b'{"a": 1}}', "syntax"),
        (b"{'a': 1}", "syntax"),
        (b'["a\x01"]', "syntax"),  # raw control character in a string
        (b"[" * 33 + b"]" * 33, "nested"),
    ],
)
def test_given_hostile_json_when_parsed_then_invalid_json(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidJson) as info:
        parse(body)
    assert fragment.lower() in info.value.message.lower()
    assert info.value.status == 400


def test_given_a_valid_surrogate_pair_when_parsed_then_accepted() -> None:
    assert parse(b'["\\ud83d\\ude00"]') == ["\U0001f600"]


def test_given_depth_exactly_at_the_cap_when_parsed_then_accepted() -> None:
    assert parse(b"[" * 32 + b"]" * 32) is not None


def test_given_forty_digit_number_when_parsed_then_accepted() -> None:
    assert parse(b"[" + b"9" * 40 + b"]") == [int("9" * 40)]


@pytest.mark.parametrize("body", [b"[" * 1_000_000, b"{" * 500_000, b'{"a":' * 200_000, b'["' + b"\\" * 999_000])
def test_given_adversarial_nesting_when_parsed_then_refused_quickly(body: bytes) -> None:
    t0 = time.perf_counter()
    with pytest.raises(InvalidJson):
        parse(body)
    assert time.perf_counter() - t0 < 2.0  # hang guard only; real figures in bench/validator_bench.py


def test_given_invalid_input_when_refused_then_the_message_does_not_echo_it() -> None:
    with pytest.raises(InvalidJson) as info:
        parse(b'{"secret-value-xyz": }')
    assert "secret-value-xyz" not in info.value.message


@pytest.mark.parametrize("escapes", [10, 5_000])  # the raw-text scan, and the walk of the decoded strings
def test_given_a_body_mostly_escapes_when_a_surrogate_is_alone_then_refused_else_accepted(escapes: int) -> None:
    filler = "\\u00e9" * escapes
    lone = f'{{"a": "{filler}", "b": ["x\\udc00y"]}}'.encode()
    with pytest.raises(InvalidJson, match="surrogate"):
        parse_json_body(lone, max_bytes=1 << 20, max_depth=32, max_number_digits=40)
    paired = f'{{"a": "{filler}", "b": ["x\\ud83d\\ude00y"]}}'.encode()
    doc = parse_json_body(paired, max_bytes=1 << 20, max_depth=32, max_number_digits=40)
    assert doc["b"] == ["x\U0001f600y"] and doc["a"] == "\u00e9" * escapes
