"""Model output through the output guardrails: PII and secret detection on whole answers (chat and generic invoke),
and the Bedrock guardrail's verdict on a completion. Streams use bulwark.streaming.holdback instead."""

from __future__ import annotations

from typing import Any


def filter_text(text: str, mode: str) -> tuple[str, tuple[str, ...]]:
    if mode == "off":
        return text, ()
    from bulwark.guardrails.apply import filter_output_text  # the detectors load on the first filtered answer

    return filter_output_text(text, mode)


def filter_json(value: Any, mode: str, hits: list[str]) -> Any:
    """A legacy model's JSON answer, with every string filtered like chat output (PII and secrets)."""
    if isinstance(value, str):
        text, kinds = filter_text(value, mode)
        hits.extend(kinds)
        return text
    if isinstance(value, list):
        return [filter_json(v, mode, hits) for v in value]
    if isinstance(value, dict):
        return {k: filter_json(v, mode, hits) for k, v in value.items()}
    return value


def filter_completion(body: dict[str, Any], mode: str) -> list[str]:
    hits: list[str] = []
    for choice in body.get("choices") or []:
        msg = choice.get("message") or {}
        if isinstance(msg.get("content"), str):
            msg["content"], kinds = filter_text(msg["content"], mode)
            hits.extend(kinds)
    return hits


def guard_completion(guardrail: Any, body: dict[str, Any]) -> list[str]:
    """Model output the guardrail blocks is withheld, as OpenAI does: empty content, finish_reason content_filter."""
    hits: list[str] = []
    for choice in body.get("choices") or []:
        msg = choice.get("message") or {}
        if isinstance(msg.get("content"), str) and msg["content"]:
            blocked, _ = guardrail.check([msg["content"]], source="OUTPUT")
            if blocked:
                msg["content"] = ""
                choice["finish_reason"] = "content_filter"
                hits.append("bedrock_guardrail")
    return hits
