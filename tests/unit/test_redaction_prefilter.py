"""The redaction prefilter is a sound shortcut: skipping the full scan never changes what gets redacted."""

from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.observability.logs import _redact_shapes, redact

FRAGMENTS = [
    "4111 1111 1111 1111",
    "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "ana@example.com",
    "123-45-6789",
    "+14155550100",
    "(415) 555-0100",
    "GB82 WEST 1234 5698 7654 32",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "bwk_0YqghnKXEJQc_nGhC93ZTYnDPclEcPAR9MHXCY7J3LD49sea9KNz0bfQ13VvJo",
    "eyJhbGciOi.eyJzdWIiOi.sig12345",
    "Bearer abcdefghijklmnop",
    "password=hunter2hunter2",
    "sk-proj-abcdefghijklmnopqrstuv",
    "xoxb-1234567890-abc",
    "-----BEGIN RSA PRIVATE KEY-----x-----END RSA PRIVATE KEY-----",
    "ghp_" + "a" * 36,
    "10.0.0.1",
    "key:abc",
]
WORDS = ["ok", "admitted", "chat", "demo-echo", "hello", " ", "-", ":", "=", "/", "_", "1", "22", "A", "z"]


@settings(max_examples=400)
@given(st.lists(st.sampled_from(FRAGMENTS + WORDS), max_size=8), st.text(max_size=30))
def test_prefilter_never_changes_the_result(parts: list[str], noise: str) -> None:
    text = noise.join(parts) if parts else noise
    full = _redact_shapes(text) if len(text) >= 6 else text
    assert redact(text) == full


def test_harmless_values_skip_the_scan_and_stay_as_they_are() -> None:
    for value in ("admitted", "demo-echo", "requests_per_minute_exceeded", "b191afa6-db07-4ec7"):
        assert redact(value) == value
