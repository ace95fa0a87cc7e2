"""Input and output guardrails, applied per the caller's role policy.

Modes: `off`; `flag` (let through, report a hit for logs and metrics); `block` (refuse with
`ContentPolicyViolation`, naming the rule kind, never the text); for PII also `redact` (typed placeholders).
Hits are (kind, action) pairs such as ("prompt_injection", "flag") or ("pii:email", "redact").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bulwark.errors import ContentPolicyViolation
from bulwark.guardrails.bedrock_guardrail import BedrockGuardrail
from bulwark.guardrails.pii_memo import PiiMemo
from bulwark.guardrails.texts import json_texts, map_json_texts
from bulwark.policy import GuardrailPolicy

if TYPE_CHECKING:
    from bulwark.validation.chat import ChatCompletionRequest


@dataclass
class GuardrailOutcome:
    request: ChatCompletionRequest
    hits: list[tuple[str, str]] = field(default_factory=list)


# The injection detector's work per request is bounded by what it reads and by how many texts it reads separately
# (each separate text costs ~0.2 ms before its first character: normalization, ~50 rules, the model):
# - the newest texts, newest first, each on its own, as long as they fit in INJECTION_BUDGET characters (a text over
#   8 KiB counts 8 KiB: detect_injection samples it), at most SEPARATE_TEXTS of them;
# - every other text whole when they fit in HEADS_BUDGET plus what the newest left unused; otherwise the head of each,
#   at most INJECTION_HEAD characters and together at most HEADS_BUDGET (shared evenly); joined in order into passages
#   of up to 8 KiB that are checked whole, each text starting a sentence.
# The trade-off: in a long conversation the middle of an older message is not read, and older texts are judged
# together, so the model weighs an attack there against its neighbours (the rules do not: a rule match anywhere counts,
# including one split across two parts). The newest turns, where an attack has to sit to steer the answer, are read
# in full. Whatever the request, the detector reads at most 24 KiB in at most 15 calls (8 texts, 7 passages).
INJECTION_BUDGET = 16_384
SEPARATE_TEXTS = 8
INJECTION_HEAD = 256
HEADS_BUDGET = 8_192  # one passage: up to 32 older texts keep 256-character heads, more share it evenly
_PASSAGE = 8_192  # detect_injection reads texts up to this long whole (scanned_text)
_HEAD_SEPARATOR = ".\n"  # a sentence end, so a head that opens with "system:" still starts a sentence


def _injection_texts(all_texts: list[str]) -> list[str]:
    """The texts detect_injection is run on, one call each, out of every text the model reads (in reading order)."""
    texts = list(all_texts)
    separate: list[str] = []
    budget = INJECTION_BUDGET
    while texts and len(separate) < SEPARATE_TEXTS:
        cost = min(len(texts[-1]), _PASSAGE)  # what detect_injection reads of it
        if cost > budget:
            break  # it goes with the older texts: its head is read
        separate.append(texts.pop())
        budget -= cost
    if not texts:
        return separate
    joins = len(_HEAD_SEPARATOR) * (len(texts) - 1)
    if sum(map(len, texts)) + joins <= HEADS_BUDGET + budget:
        head = _PASSAGE  # what the newest texts left unread covers the others whole: read them all
    else:
        head = max(1, min(INJECTION_HEAD, (HEADS_BUDGET - joins) // len(texts)))
    passages: list[str] = []
    current = ""
    for text in texts:
        piece = text[:head]
        if current and len(current) + len(_HEAD_SEPARATOR) + len(piece) > _PASSAGE:
            passages.append(current)
            current = piece
        else:
            current = f"{current}{_HEAD_SEPARATOR}{piece}" if current else piece
    passages.append(current)
    return separate + passages


UNTRUSTED_TEXTS = 4  # the newest tool results are also judged at the stricter bar (each one more detector call)


def _injection(texts: list[str], mode: str, hits: list[tuple[str, str]], untrusted: Sequence[str] = ()) -> None:
    if mode == "off":
        return
    # Imported where used: its rules and normalization tables are built at import, which init does not need.
    from bulwark.guardrails.injection import detect_injection

    # Every role is checked: a client that may send "assistant" or "tool" turns can forge history too. Tool results
    # (`untrusted`) are data the caller fetched, not wrote: the newest ones are judged at the stricter threshold too.
    if any(detect_injection(text).detected for text in _injection_texts(texts)) or any(
        detect_injection(text, untrusted=True).detected for text in untrusted[-UNTRUSTED_TEXTS:]
    ):
        if mode == "block":
            raise ContentPolicyViolation("The request was refused by the content policy (rule: prompt_injection).")
        hits.append(("prompt_injection", "flag"))


def _pii_found(
    texts: list[str], mode: str, hits: list[tuple[str, str]], memo: PiiMemo | None, scope: str
) -> dict[str, tuple[str, tuple[str, ...]]] | None:
    """text -> (redacted, kinds) for each distinct text when mode is `redact` (None otherwise); records the hits and
    refuses in mode `block`."""
    if mode == "off":
        return None
    from bulwark.guardrails.pii import redact_pii_many  # imported where used: its patterns compile at import

    distinct = list(dict.fromkeys(texts))  # each one once
    results = memo.redact_many(scope, distinct) if memo is not None else redact_pii_many(distinct)
    found = dict(zip(distinct, results, strict=True))
    kinds = {kind for _text, text_kinds in found.values() for kind in text_kinds}
    if kinds and mode == "block":
        raise ContentPolicyViolation(
            f"The request was refused by the content policy (rule: pii:{','.join(sorted(kinds))})."
        )
    action = "redact" if mode == "redact" else "flag"
    hits.extend((f"pii:{k}", action) for k in sorted(kinds))
    return found if mode == "redact" else None


def _pii(
    req: ChatCompletionRequest,
    mode: str,
    hits: list[tuple[str, str]],
    memo: PiiMemo | None = None,
    scope: str = "",
) -> ChatCompletionRequest:
    from bulwark.validation.chat import map_texts, model_texts

    found = _pii_found(model_texts(req), mode, hits, memo, scope)
    if found is None:
        return req
    # map_texts rewrites exactly the texts model_texts lists (tests/unit/test_guardrails_apply.py holds them equal), so
    # every text the injection check read is the text that goes upstream, redacted.
    return map_texts(req, lambda text: found[text][0])


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
    from bulwark.validation.chat import iter_texts, model_texts  # imported where used: its models are built at import

    hits: list[tuple[str, str]] = []
    tool_results = [text for role, text in iter_texts(req) if role == "tool"]
    _injection(model_texts(req), policy.prompt_injection, hits, tool_results)
    req = _pii(req, policy.pii_input, hits, pii_memo, caller)
    if bedrock is not None:
        blocked, reasons = bedrock.check(model_texts(req), source="INPUT")
        if blocked:
            raise ContentPolicyViolation(
                f"The request was refused by the content policy (rule: bedrock_guardrail:{','.join(reasons)})."
            )
    return GuardrailOutcome(request=req, hits=hits)


@dataclass
class JsonGuardrailOutcome:
    doc: Any
    hits: list[tuple[str, str]] = field(default_factory=list)


def apply_json_guardrails(doc: Any, policy: GuardrailPolicy) -> JsonGuardrailOutcome:
    """The role's input guardrails on a generic invoke body: every string value the model's input schema let through
    is read by the injection check and then redacted (or flagged, or refused) for PII, exactly as chat texts are."""
    hits: list[tuple[str, str]] = []
    texts = json_texts(doc)
    _injection(texts, policy.prompt_injection, hits)
    found = _pii_found(texts, policy.pii_input, hits, None, "")
    if found is not None:
        doc = map_json_texts(doc, lambda text: found[text][0])
    return JsonGuardrailOutcome(doc=doc, hits=hits)


def filter_output_text(text: str, mode: str) -> tuple[str, tuple[str, ...]]:
    """Model output through the PII detector: `off` (unchanged), `flag` (unchanged, kinds reported), `redact`."""
    if mode == "off":
        return text, ()
    from bulwark.guardrails.pii import find_pii, redact_pii

    if mode == "redact":
        return redact_pii(text)
    return text, tuple(sorted({f.kind for f in find_pii(text)}))
