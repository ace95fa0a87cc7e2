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


CORROBORATION = 0.2  # rule weight that counts as evidence (any one rule)


# Tool results and retrieved documents are data the caller did not write: a text there is flagged at 0.7 of the
# score a user's own turn needs (bench/guardrail_eval.py --loso shows what this buys and costs on documents).
UNTRUSTED_THRESHOLD = 0.7


def detect_injection(text: str, *, untrusted: bool = False) -> InjectionVerdict:
    """Rules on every normalized view, checks on the text as written (structure_hits), then the linear model on the
    plain normalized view; `untrusted` (a tool result or a document) lowers the bar to UNTRUSTED_THRESHOLD.

    Detected when the rule weights sum to the threshold, or when the model's probability reaches its own threshold
    and a rule outside WEAK_RULES fired (weight >= 0.2), or reaches its stricter alone threshold (the probability that
    gave 0.1% false positives out of fold in training) with no such rule. Without the
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
    if m is None:
        return verdict(hit, None, None, threshold=threshold)
    p = model_probability(all_views[0])
    return verdict(hit, p, m.threshold, alone_threshold=m.threshold_alone, threshold=threshold)


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
_SUFFIX_MIN_TOKENS = 8  # after the request's first five tokens
_SUFFIX_ODD_SHARE = 0.3
_SUFFIX_MAX_CHARS = 1500  # a request and its suffix: one or two lines, not a document
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z']*[,.]?")
_CAMEL = re.compile(r"[a-z][A-Z]")
# A symbol between two letters inside one token ("added.accept", "br.xaxis", "(ui"): token glue that optimised suffixes
# are full of and prose is not (after a token's own quotes and punctuation are set aside).
_GLUED = re.compile(r"[a-z][.\-_/\\|<>{}\[\]()$&*^~=+:;][A-Za-z]")
# Words after which a capitalised word is ordinary English (a name after "in", "of", "the", ...).
_BEFORE_NAMES = frozenset(
    ("in", "of", "the", "at", "to", "by", "from", "for", "on", "with", "as", "and", "a", "an", "did", "was", "is",
     "has", "have", "about", "like", "called", "named", "than", "does", "do")
)  # fmt: skip
_SENTENCE_END = (".", "!", "?", ":", '"')


def _odd_token(tok: str) -> bool:
    """A token natural text rarely has: letters mixed with two or more symbols, an inner capital after a small
    letter, or two or more symbols alone (GCG-style optimised suffixes are made of such tokens)."""
    symbols = sum(not c.isalnum() for c in tok)
    letters = len(tok) - symbols
    return (letters > 0 and symbols >= 2) or _CAMEL.search(tok) is not None or (letters == 0 and symbols >= 2)


def _stray_capital(prev: str, tok: str, nxt: str) -> bool:
    """A capitalised word alone between two small words, not after a sentence's end or a word that names follow:
    word salad ("location Looks concise", "liable hitter None before"), where prose has names in runs ("New York")."""
    return (
        tok[:1].isupper()
        and tok[1:].islower()
        and prev[:1].islower()
        and nxt[:1].islower()
        and prev.lower() not in _BEFORE_NAMES
        and not prev.endswith(_SENTENCE_END)
    )


def adversarial_suffix(text: str) -> bool:
    """Whether a short text is a plain request followed by an optimised suffix: one or two lines, the last one opening
    with five plain words, and at least 30% of the eight or more tokens after them odd (symbols mixed into words,
    tokens glued by a symbol, stray capitals). Character statistics that prose, code and quoted options do not have:
    none of the 4,665 benign texts of bench/guardrail_eval.py reaches this share."""
    body = text.strip()
    if len(body) > _SUFFIX_MAX_CHARS or body.count("\n") > 1:
        return False
    line = body[body.rfind("\n") + 1 :]
    tokens = line.split()
    if len(tokens) < 5 + _SUFFIX_MIN_TOKENS or not all(_PLAIN_WORD.fullmatch(t) for t in tokens[:5]):
        return False
    odd = 0
    for k in range(5, len(tokens)):
        tok = tokens[k]
        stray = _stray_capital(tokens[k - 1], tok, tokens[k + 1] if k + 1 < len(tokens) else "x")
        if tok.strip("'\",.;:!?").isalnum():  # a plain or quoted word: odd only as a stray capital
            odd += stray
        else:
            odd += stray or _odd_token(tok) or _GLUED.search(tok) is not None
    return odd >= _SUFFIX_ODD_SHARE * (len(tokens) - 5)


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
    alone_threshold: float | None = None,
    weak: frozenset[str] = WEAK_RULES,
    threshold: float = THRESHOLD,
) -> InjectionVerdict:
    """The decision from the rule hits and the model's probability (None: no model, or not needed). Shared with
    bench/guardrail_eval.py, whose leave-one-source-out evaluation supplies a model trained without the source (and
    tries other `weak` sets and alone thresholds for its ablation table). `alone_threshold` is the model's bar when no
    rule outside `weak` corroborates it (None: its threshold alone is the bar)."""
    rule_score = round(sum(hit.values()), 3)
    rules = tuple(sorted(hit))
    if rule_score >= threshold:
        return InjectionVerdict(detected=True, score=round(rule_score / threshold, 3), rules=rules)
    model_score = 0.0
    if p is not None and model_threshold is not None:
        evidence = sum(w for name, w in hit.items() if name not in weak)
        bar = model_threshold if evidence >= CORROBORATION or alone_threshold is None else alone_threshold
        model_score = round(p / (bar * threshold), 3)
    if model_score >= 1.0:
        rules = (*rules, "model")
    score = max(round(rule_score / threshold, 3), model_score)
    return InjectionVerdict(detected=score >= 1.0, score=score, rules=rules)
