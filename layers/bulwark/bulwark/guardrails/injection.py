"""Built-in prompt-injection and jailbreak detector: the entry point over normalization, rules and model.

normalization.py turns a text into views that undo obfuscation; rules.py matches a weighted phrase rule set on every
view (the text is flagged when the weights sum to 1.0); model.py scores the plain view with a linear model, which
decides only when the rules alone do not. This module samples long texts and combines the two.
"""

from __future__ import annotations

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


def detect_injection(text: str) -> InjectionVerdict:
    """Rules on every normalized view plus the linear model on the plain normalized view.

    Detected when the rule weights sum to 1.0, or when the model's probability reaches its threshold (chosen offline
    at ~1% out-of-fold false positives on the tune half) and at least one rule fired (weight >= 0.2), or reaches 2.5x
    the threshold with no rule at all. Without the corroboration, short benign prompts with attack vocabulary
    ("please ignore the previous email") were flagged by the model alone; the two constants were chosen on the tune
    half and the hand-written hard negatives of tests/unit/test_injection.py, not on held-out data.
    Rule matching stops once the rule weights reach 1.0 (then `rules` lists the rules found up to that point).
    `score` is the larger of the rule sum and the model's probability / its effective threshold, so score >= 1.0
    exactly when detected; "model" is listed in `rules` when the model decided. Long texts are sampled first (see
    scanned_text).
    """
    all_views = views(scanned_text(text))
    hit = rule_hits_of_views(all_views, stop_at=THRESHOLD)
    rule_score = round(sum(hit.values()), 3)
    rules = tuple(sorted(hit))
    if rule_score >= THRESHOLD:  # settled by the rules: the model is not needed
        return InjectionVerdict(detected=True, score=rule_score, rules=rules)
    p = model_probability(all_views[0])  # the plain normalized view
    m = load_model()
    model_score = 0.0
    if p is not None and m is not None:
        factor = 1.0 if rule_score >= CORROBORATION else MODEL_ALONE
        model_score = round(p / (m.threshold * factor), 3)
    if model_score >= THRESHOLD and rule_score < THRESHOLD:
        rules = (*rules, "model")
    score = max(rule_score, model_score)
    return InjectionVerdict(detected=score >= THRESHOLD, score=score, rules=rules)
