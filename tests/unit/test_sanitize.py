import pytest

from bulwark.policy import RequestRules
from bulwark.validation.chat import validate_chat_request
from bulwark.validation.sanitize import sanitize_chat, sanitize_text


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
