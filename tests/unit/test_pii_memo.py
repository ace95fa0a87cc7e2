"""The per-caller PII memo: a conversation's history is scanned once per container, never shared across callers."""

from __future__ import annotations

import pydantic
import pytest

from bulwark.guardrails.apply import apply_input_guardrails
from bulwark.guardrails.pii import redact_pii
from bulwark.guardrails.pii_memo import MIN_CHARS, PiiMemo
from bulwark.policy import GuardrailPolicy
from bulwark.settings import PII_MEMO_CHARS, Settings
from bulwark.validation.chat import ChatCompletionRequest

LOG = "2024-05-17T12:04:33Z GET /orders 200 ip=10.12.4.88 mail=ops@example.com card 4111 1111 1111 1111\n"
LONG = LOG * (MIN_CHARS // len(LOG) + 1)


def test_a_text_the_caller_sent_before_is_answered_from_the_memo() -> None:
    memo = PiiMemo()
    first = memo.redact("key:a", LONG)
    assert first == redact_pii(LONG) and memo.hits == 0
    assert memo.redact("key:a", LONG) == first
    assert memo.hits == 1


def test_one_callers_entries_never_answer_for_another() -> None:
    memo = PiiMemo()
    memo.redact("key:a", LONG)
    assert memo.redact("key:b", LONG) == redact_pii(LONG)
    assert memo.hits == 0
    assert memo.redact("", LONG) == redact_pii(LONG)  # no caller: no memo
    assert memo.hits == 0


def test_short_texts_are_scanned_every_time() -> None:
    memo = PiiMemo()
    for _ in range(3):
        memo.redact("key:a", LOG)
    assert memo.hits == 0 and memo.chars == 0


def test_entries_hold_the_redacted_text_never_the_original() -> None:
    memo = PiiMemo()
    memo.redact("key:a", LONG)
    ((_key, (kept, kinds)),) = memo._entries.items()  # what is held in memory is the point
    assert "ops@example.com" not in kept and "4111" not in kept and "10.12.4.88" not in kept
    assert kinds == ("email", "ipv4", "payment_card")


def test_the_memo_is_bounded_and_forgets_the_least_recently_used() -> None:
    memo = PiiMemo(max_chars=3 * len(LONG))
    texts = [LONG + str(i) for i in range(5)]
    for text in texts:
        memo.redact("key:a", text)
    assert memo.chars <= 3 * len(LONG)
    memo.redact("key:a", texts[0])  # forgotten: scanned again
    assert memo.hits == 0
    memo.redact("key:a", texts[4])  # recent: remembered
    assert memo.hits == 1


def test_zero_turns_it_off() -> None:
    memo = PiiMemo(max_chars=0)
    memo.redact("key:a", LONG)
    memo.redact("key:a", LONG)
    assert memo.hits == 0 and memo.chars == 0


@pytest.mark.parametrize("mode", ["redact", "flag"])
def test_guardrails_give_the_same_outcome_from_the_memo(mode: str) -> None:
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": LONG}, {"role": "user", "content": "and now?"}]}
    )
    policy = GuardrailPolicy(prompt_injection="off", pii_input=mode)
    memo = PiiMemo()
    plain = apply_input_guardrails(req, policy)
    first = apply_input_guardrails(req, policy, pii_memo=memo, caller="key:a")
    again = apply_input_guardrails(req, policy, pii_memo=memo, caller="key:a")
    assert memo.hits == 1
    assert plain.hits == first.hits == again.hits and plain.hits
    assert plain.request == first.request == again.request


def test_the_size_comes_from_the_environment_and_is_checked() -> None:
    assert Settings.from_env({"BULWARK_PII_MEMO_CHARS": "0"}).pii_memo_chars == 0
    assert Settings.from_env({}).pii_memo_chars == PII_MEMO_CHARS == 4_000_000
    with pytest.raises(pydantic.ValidationError):
        Settings.from_env({"BULWARK_PII_MEMO_CHARS": "lots"})
    with pytest.raises(pydantic.ValidationError):
        Settings.from_env({"BULWARK_PII_MEMO_CHARS": "-1"})
