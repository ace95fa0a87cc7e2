"""Input and output guardrails, applied per the caller's role policy.

Modes: `off`; `flag` (let through, report a hit for logs and metrics); `block` (refuse with
`ContentPolicyViolation`, naming the rule kind, never the text); for PII also `redact` (typed placeholders).
Hits are (kind, action) pairs such as ("prompt_injection", "flag") or ("pii:email", "redact").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bulwark.errors import ContentPolicyViolation
from bulwark.guardrails.bedrock_guardrail import BedrockGuardrail
from bulwark.guardrails.injection import detect_injection
from bulwark.guardrails.pii import find_pii, redact_pii
from bulwark.guardrails.pii_memo import PiiMemo
from bulwark.policy import GuardrailPolicy
from bulwark.validation.chat import ChatCompletionRequest, iter_texts, map_texts


@dataclass
class GuardrailOutcome:
    request: ChatCompletionRequest
    hits: list[tuple[str, str]] = field(default_factory=list)


# The injection detector costs ~0.6 ms per KiB it reads. Per request it reads at most INJECTION_BUDGET characters in
# full (each text sampled by detect_injection itself above 8 KiB), newest messages first, and the head of every other
# text, so a maximum-size request stays within the validator's time budget. The trade-off: in a very long conversation,
# the middle of an older message is not read; the newest turns, where an attack has to sit to steer the answer, are.
INJECTION_BUDGET = 16_384
INJECTION_HEAD = 256


def _injection_texts(req: ChatCompletionRequest) -> list[str]:
    texts = [text for _role, text in iter_texts(req)]
    if sum(len(t) for t in texts) <= INJECTION_BUDGET:
        return texts
    chosen: list[str] = []
    budget = INJECTION_BUDGET
    for text in reversed(texts):
        if budget > 0:
            chosen.append(text)
            budget -= min(len(text), 8_192)
        else:
            chosen.append(text[:INJECTION_HEAD])
    return chosen


def _injection(req: ChatCompletionRequest, mode: str, hits: list[tuple[str, str]]) -> None:
    if mode == "off":
        return
    # Every role is checked: a client that may send "assistant" or "tool" turns can forge history too.
    if any(detect_injection(text).detected for text in _injection_texts(req)):
        if mode == "block":
            raise ContentPolicyViolation("The request was refused by the content policy (rule: prompt_injection).")
        hits.append(("prompt_injection", "flag"))


def _pii(
    req: ChatCompletionRequest,
    mode: str,
    hits: list[tuple[str, str]],
    memo: PiiMemo | None = None,
    scope: str = "",
) -> ChatCompletionRequest:
    if mode == "off":
        return req
    kinds: set[str] = set()
    if mode == "redact":

        def redact(text: str) -> str:
            out, found = memo.redact(scope, text) if memo is not None else redact_pii(text)
            kinds.update(found)
            return out

        req = map_texts(req, redact)
    else:
        for _role, text in iter_texts(req):
            if memo is not None:
                kinds.update(memo.redact(scope, text)[1])
            else:
                kinds.update(f.kind for f in find_pii(text))
        if kinds and mode == "block":
            raise ContentPolicyViolation(
                f"The request was refused by the content policy (rule: pii:{','.join(sorted(kinds))})."
            )
    action = "redact" if mode == "redact" else "flag"
    hits.extend((f"pii:{k}", action) for k in sorted(kinds))
    return req


def apply_input_guardrails(
    req: ChatCompletionRequest,
    policy: GuardrailPolicy,
    *,
    bedrock: BedrockGuardrail | None = None,
    pii_memo: PiiMemo | None = None,
    caller: str = "",
) -> GuardrailOutcome:
    """Injection check, then PII (the redacted copy is what goes upstream), then the optional Bedrock guardrail.
    With `pii_memo`, long texts `caller` sent before (a conversation's history) are not scanned again."""
    hits: list[tuple[str, str]] = []
    _injection(req, policy.prompt_injection, hits)
    req = _pii(req, policy.pii_input, hits, pii_memo, caller)
    if bedrock is not None:
        blocked, reasons = bedrock.check([text for _role, text in iter_texts(req)], source="INPUT")
        if blocked:
            raise ContentPolicyViolation(
                f"The request was refused by the content policy (rule: bedrock_guardrail:{','.join(reasons)})."
            )
    return GuardrailOutcome(request=req, hits=hits)


def filter_output_text(text: str, mode: str) -> tuple[str, tuple[str, ...]]:
    """Model output through the PII detector: `off` (unchanged), `flag` (unchanged, kinds reported), `redact`."""
    if mode == "off":
        return text, ()
    if mode == "redact":
        return redact_pii(text)
    return text, tuple(sorted({f.kind for f in find_pii(text)}))
