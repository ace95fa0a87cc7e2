"""API key format: prefix, id, >= 256-bit secret, checksum; keyed hashing compared in constant time."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulwark.auth import keys


def test_new_key_has_the_contract_format() -> None:
    api_key, parsed = keys.new_api_key()
    assert api_key.startswith("bwk_")
    assert len(api_key) == keys.KEY_LEN
    assert keys.parse_api_key(api_key) == parsed


def test_secret_carries_at_least_256_bits() -> None:
    assert keys.SECRET_LEN * math.log2(62) >= 256


def test_secrets_are_unique() -> None:
    assert len({keys.new_api_key()[1].secret for _ in range(500)}) == 500


def test_mistyped_key_fails_checksum_without_a_store() -> None:
    api_key, _ = keys.new_api_key()
    i = len("bwk_") + 20
    typo = api_key[:i] + ("A" if api_key[i] != "A" else "B") + api_key[i + 1 :]
    assert keys.parse_api_key(typo) is None


@pytest.mark.parametrize(
    "candidate",
    ["", "bwk_", "sk-abc", "bwk_" + "a" * 62, "BWK_" + "a" * 62, "bwk_abc_def", "x" * 66, "bwk_\u00e9" + "a" * 61],
)
def test_malformed_keys_are_refused(candidate: str) -> None:
    assert keys.parse_api_key(candidate) is None


@given(st.text(max_size=80))
def test_random_strings_never_parse(s: str) -> None:
    # A random string passes the checksum with probability ~2**-32; hypothesis will not find one.
    assert keys.parse_api_key(s) is None or s.startswith("bwk_")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_checksum_is_fixed_width(v: int) -> None:
    assert len(keys._base62_fixed(v, keys.CHECKSUM_LEN)) == keys.CHECKSUM_LEN


def test_hash_binds_key_id_and_uses_the_pepper() -> None:
    _, parsed = keys.new_api_key()
    h = keys.hash_secret(b"p" * 32, parsed)
    assert keys.matches(b"p" * 32, parsed, h)
    assert not keys.matches(b"q" * 32, parsed, h)
    other = keys.ParsedKey(keys.new_key_id(), parsed.secret)
    assert not keys.matches(b"p" * 32, other, h)


def test_repr_never_shows_the_secret() -> None:
    _, parsed = keys.new_api_key()
    assert parsed.secret not in repr(parsed)


def test_rotation_keeps_the_key_id() -> None:
    _, first = keys.new_api_key()
    again, second = keys.new_api_key(first.key_id)
    assert second.key_id == first.key_id and second.secret != first.secret
    assert keys.parse_api_key(again) == second
