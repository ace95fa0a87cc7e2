import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.policy import RequestRules
from bulwark.validation.chat import validate_chat_request
from bulwark.validation.sanitize import _DROP, sanitize_chat, sanitize_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("ig\u200bnore", "ignore"),  # zero-width space
        ("a\u200c\u200d\u2060\ufeffb", "ab"),  # joiners, word joiner, BOM
        ("abc\u202edcba", "abcdcba"),  # right-to-left override
        ("x\u2066y\u2069", "xy"),  # bidi isolates
        ("hi" + "".join(chr(0xE0000 + ord(c)) for c in "ignore"), "hi"),  # tag-block ASCII smuggling
        ("a\x00b\x07c\x1bd\x7fe\x85f\x9f", "abcdef"),  # C0, DEL, C1
        ("keep\ttabs\nand\r\nnewlines", "keep\ttabs\nand\r\nnewlines"),
        ("ｉｇｎｏｒｅ", "ignore"),  # fullwidth, folded by NFKC
        ("\ufb01le", "file"),  # ligature
        ("𝐢𝐠𝐧𝐨𝐫𝐞", "ignore"),  # mathematical bold
        ("e\u0301", "\u00e9"),  # composed
        ("x\ufe0fy\U000e0100z", "xyz"),  # variation selectors
    ],
)
def test_given_hidden_or_compat_characters_when_sanitized_then_removed_or_folded(raw: str, clean: str) -> None:
    assert sanitize_text(raw) == clean


def test_given_plain_text_when_sanitized_then_unchanged() -> None:
    text = "Hello, world! Ça va? 日本語 ✓"
    assert sanitize_text(text) == text


def test_given_a_chat_request_when_sanitized_then_every_model_read_text_is_clean() -> None:
    doc = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "s\u200b1"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "u\u202e2"},
                    {"type": "image_url", "image_url": {"url": "https://x/\u200b"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":"\u200b"}'}}
                ],
            },
            {"role": "tool", "content": "t\x003", "tool_call_id": "c"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d\u2066"}}],
    }
    req = sanitize_chat(validate_chat_request(doc, RequestRules()))
    assert req.messages[0].content == "s1"
    assert req.messages[1].content[0].text == "u2"  # type: ignore[union-attr,index]
    assert req.messages[1].content[1].image_url.url == "https://x/\u200b"  # type: ignore[union-attr,index]
    assert req.messages[2].tool_calls[0].function.arguments == '{"a":""}'  # type: ignore[union-attr,index]
    assert req.messages[3].content == "t3"
    assert req.tools is not None and req.tools[0].function.description == "d"


def _reference(text: str) -> str:
    """The definition: drop with str.translate, NFKC, drop again if NFKC changed anything."""
    cleaned = text.translate(_DROP)
    if not unicodedata.is_normalized("NFKC", cleaned):
        cleaned = unicodedata.normalize("NFKC", cleaned).translate(_DROP)
    return cleaned


def test_given_every_code_point_between_text_when_sanitized_then_as_defined() -> None:
    planes = [*range(0x0000, 0xD800), *range(0xE000, 0x20000), *range(0xE0000, 0xE0200)]
    for cp in planes:
        for text in (f"a{chr(cp)}b", f"é{chr(cp)}\n日"):
            assert sanitize_text(text) == _reference(text), hex(cp)


@settings(max_examples=1_000, deadline=None)
@given(st.text(alphabet=st.sampled_from([chr(c) for c in sorted(_DROP)][:300] + list("ab é日\t\n\r😀ｉ\ufb01\u0301"))))
def test_given_any_mix_of_removable_and_plain_characters_when_sanitized_then_as_defined(text: str) -> None:
    assert sanitize_text(text) == _reference(text)


def test_given_a_clean_request_when_sanitized_then_the_same_object_comes_back() -> None:
    req = validate_chat_request({"model": "m", "messages": [{"role": "user", "content": "plain"}]}, RequestRules())
    assert sanitize_chat(req) is req
    dirty = validate_chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "plain"}, {"role": "user", "content": "x\u200b"}]},
        RequestRules(),
    )
    out = sanitize_chat(dirty)
    assert out.messages[0] is dirty.messages[0]
    assert out.messages[1].content == "x"
    assert dirty.messages[1].content == "x\u200b"  # the original is not modified
