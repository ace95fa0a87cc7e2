"""Built-in prompt-injection and jailbreak detector: the entry point over normalization, rules and model.

normalization.py turns a text into views that undo obfuscation; rules.py matches a weighted phrase rule set on every
view (the text is flagged when the weights sum to 1.0); model.py scores the plain view with a linear model, which
decides only when the rules alone do not. This module samples long texts and combines the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bulwark.guardrails.model import load_model, model_probability
from bulwark.guardrails.normalization import views
from bulwark.guardrails.rules import rule_hits_of_views

THRESHOLD = 1.0


@dataclass(frozen=True)
class InjectionVerdict:
    detected: bool
    score: float
    rules: tuple[str, ...]


SCAN_HEAD = 4096
SCAN_TAIL = 2048
SCAN_WINDOWS = 4
SCAN_WINDOW = 512


def scanned_text(text: str) -> str:
    """What detect_injection looks at: the whole text up to 8 KiB characters; for longer texts, the first 4 KiB, the
    last 2 KiB and 4 windows of 512 characters evenly spread over the middle (fixed positions, so verdicts are
    reproducible).

    The trade-off, honestly: an injection buried in the middle of a long document, outside every window, is not seen
    (a 512-character window covers 1/256 of a 1 MiB body), and a short attack surrounded by long benign text is
    diluted for the model. Chat prompts and nearly all public jailbreaks are shorter than 8 KiB and are scanned
    whole; the cap bounds the work per message (normalization, ~50 regexes on up to 5 views, the model) to ~8 KiB,
    so a 1 MiB body costs about what an 8 KiB one does and padding buys an attacker no CPU time.
    """
    limit = SCAN_HEAD + SCAN_TAIL + SCAN_WINDOWS * SCAN_WINDOW
    if len(text) <= limit:
        return text
    middle = len(text) - SCAN_HEAD - SCAN_TAIL
    step = middle // SCAN_WINDOWS
    parts = [text[:SCAN_HEAD]]
    for i in range(SCAN_WINDOWS):
        start = SCAN_HEAD + i * step + (step - SCAN_WINDOW) // 2
        parts.append(text[start : start + SCAN_WINDOW])
    parts.append(text[-SCAN_TAIL:])
    return "\n".join(parts)


MODEL_ALONE = 2.5  # with no rule evidence at all, the model must reach 2.5x its threshold on its own
CORROBORATION = 0.2  # rule weight that counts as evidence (any one rule)


# Tool results and retrieved documents are data the caller did not write: a text there is flagged at 0.7 of the
# score a user's own turn needs (bench/guardrail_eval.py --loso shows what this buys and costs on documents).
UNTRUSTED_THRESHOLD = 0.7


def detect_injection(text: str, *, untrusted: bool = False) -> InjectionVerdict:
    """Rules on every normalized view, checks on the text as written (structure_hits), then the linear model on the
    plain normalized view; `untrusted` (a tool result or a document) lowers the bar to UNTRUSTED_THRESHOLD.

    Detected when the rule weights sum to the threshold, or when the model's probability reaches its own threshold
    and a rule outside WEAK_RULES fired (weight >= 0.2), or reaches 2.5x it with no such rule. Without the
    corroboration, short benign prompts with attack vocabulary ("please ignore the previous email") and LLM-judge
    templates full of AI vocabulary were flagged by the model alone (bench/guardrail_eval.py's ablation table).
    Rule matching stops once the rule weights reach the threshold (then `rules` lists the rules found up to there).
    `score` is the larger of the rule sum and the model's probability / its effective threshold, scaled so that
    score >= 1.0 exactly when detected; "model" is listed in `rules` when the model decided. Long texts are sampled
    first (see scanned_text).
    """
    threshold = UNTRUSTED_THRESHOLD if untrusted else THRESHOLD
    scanned = scanned_text(text)
    all_views = views(scanned)
    hit = rule_hits_of_views(all_views, stop_at=threshold)
    if sum(hit.values()) < threshold:
        hit.update(structure_hits(scanned, hit))
    if sum(hit.values()) >= threshold:  # settled by the rules: the model is not needed
        return verdict(hit, None, None, threshold=threshold)
    m = load_model()
    return verdict(hit, model_probability(all_views[0]), m.threshold if m is not None else None, threshold=threshold)


# Chat-template and role markers as they are written (the views fold "<|im_start|>" to "< im start ", where the
# rules cannot tell it from a comparison): a user or a document that carries them is forging conversation structure.
_MARKER = re.compile(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text)\|>"
    r"|<(?:start|end)_of_turn>|\[/?inst\]|<</?sys>>|(?m:^#{2,4} ?(?:system|instruction|response|assistant) ?:?$)"
    r"|<!-- ?(?:assistant|system|ai|llm|instructions?|note to)\b"
)
_MARKER_CHARS = ("<|", "_of_turn>", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "#", "<!--")
# A line that opens as a role ("system: ..."), or a closing tag of the wrapper a document or tool result came in: text
# that claims to end the data and start the conversation again.
_ROLE_LINE = re.compile(
    r"(?m:^[ \t]*(?:system|assistant|developer|admin|sys)(?: message| note| prompt)? ?: ?\S)"
    r"|</(?:untrusted|document|documents|context|data|tool_output|tool_result|search_results?|retrieved|email|input)>"
)
# An order to call one of the agent's tools by name (snake_case, as tool names are): in a document or tool result an
# instruction, not data. On the text as written: the views fold "_" to a space.
_TOOL_ORDER = re.compile(r"\b(?:call|invoke|run|execute|use|trigger) (?:the )?[a-z]+_[a-z0-9_]+\b(?: tool| function)?"
                         r" (?:on|with|to|for)\b")  # fmt: skip
ROLE_LINE_WEIGHT = 0.6
TOOL_ORDER_WEIGHT = 0.5
MARKER_WEIGHT = 0.8
SUFFIX_WEIGHT = 1.0
_SUFFIX_MIN_TOKENS = 8  # in the odd part of the line
_SUFFIX_ODD_SHARE = 0.35
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z']*[,.]?")
_CAMEL = re.compile(r"[a-z][A-Z]")


def _odd_token(tok: str) -> bool:
    """A token natural text rarely has: letters mixed with two or more symbols, an inner capital after a small
    letter, or two or more symbols alone (GCG-style optimised suffixes are made of such tokens)."""
    symbols = sum(not c.isalnum() for c in tok)
    letters = len(tok) - symbols
    return (letters > 0 and symbols >= 2) or _CAMEL.search(tok) is not None or (letters == 0 and symbols >= 2)


def adversarial_suffix(text: str) -> bool:
    """Whether the last line is a plain request followed by an optimised suffix: its first five tokens are plain words
    and at least 35% of the eight or more tokens after them are odd (character statistics natural text and code do
    not share: code lines do not open with five plain words)."""
    tail = text[-600:].rstrip()
    line = tail[tail.rfind("\n") + 1 :]
    tokens = line.split()
    if len(tokens) < 5 + _SUFFIX_MIN_TOKENS or not all(_PLAIN_WORD.fullmatch(t) for t in tokens[:5]):
        return False
    rest = tokens[5:]
    return sum(map(_odd_token, rest)) >= _SUFFIX_ODD_SHARE * len(rest)


def structure_hits(scanned: str, hit: dict[str, float]) -> dict[str, float]:
    """Checks on the text as written rather than on its normalized views: forged chat-template markers (counted once
    with the rules' chat_delimiter) and an adversarial suffix."""
    out: dict[str, float] = {}
    marked = "chat_delimiter" not in hit and any(m in scanned for m in _MARKER_CHARS)
    if marked and _MARKER.search(scanned.casefold()) is not None:
        out["chat_marker"] = MARKER_WEIGHT
    if adversarial_suffix(scanned):
        out["adversarial_suffix"] = SUFFIX_WEIGHT
    folded = scanned.casefold()
    if (":" in folded or "</" in folded) and "role_prefix" not in hit and _ROLE_LINE.search(folded) is not None:
        out["role_line"] = ROLE_LINE_WEIGHT
    if "_" in folded and _TOOL_ORDER.search(folded) is not None:
        out["tool_call_order"] = TOOL_ORDER_WEIGHT
    return out


# Vocabulary rules that benign text about AI, safety or fiction matches too: they do not corroborate the model.
WEAK_RULES = frozenset({"ai_target", "roleplay", "harm_vocab", "openai_policy", "leetspeak_request", "mode_enabled"})


def verdict(
    hit: dict[str, float],
    p: float | None,
    model_threshold: float | None,
    *,
    weak: frozenset[str] = WEAK_RULES,
    model_alone: float | None = None,
    threshold: float = THRESHOLD,
) -> InjectionVerdict:
    """The decision from the rule hits and the model's probability (None: no model, or not needed). Shared with
    bench/guardrail_eval.py, whose leave-one-source-out evaluation supplies a model trained without the source (and
    tries other `weak` sets and `model_alone` factors for its ablation table)."""
    rule_score = round(sum(hit.values()), 3)
    rules = tuple(sorted(hit))
    if rule_score >= threshold:
        return InjectionVerdict(detected=True, score=round(rule_score / threshold, 3), rules=rules)
    model_score = 0.0
    if p is not None and model_threshold is not None:
        evidence = sum(w for name, w in hit.items() if name not in weak)
        factor = 1.0 if evidence >= CORROBORATION else (MODEL_ALONE if model_alone is None else model_alone)
        model_score = round(p / (model_threshold * factor * threshold), 3)
    if model_score >= 1.0:
        rules = (*rules, "model")
    score = max(round(rule_score / threshold, 3), model_score)
    return InjectionVerdict(detected=score >= 1.0, score=score, rules=rules)
