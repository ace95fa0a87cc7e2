"""Every text the model reads, for every route: the one list the built-in detectors and the Bedrock guardrail read.

Chat requests: validation.chat.model_texts (tool descriptions and parameter schemas' texts, message contents,
refusals, tool-call arguments), which map_texts rewrites exactly. Generic invoke bodies: every string value of the
JSON document the model's input schema let through, in document order, which map_json_texts rewrites exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

Route = Literal["chat", "invoke"]


def _walk(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _walk(item, out)
    elif isinstance(value, list):
        for item in value:
            _walk(item, out)


def json_texts(doc: Any) -> list[str]:
    """Every string value in a parsed JSON document, in document order (object keys are field names, not text)."""
    out: list[str] = []
    _walk(doc, out)
    return out


def map_json_texts(doc: Any, fn: Callable[[str], str]) -> Any:
    """`doc` with `fn` applied to every string json_texts lists; the same object where nothing changed."""
    if isinstance(doc, str):
        return fn(doc)
    if isinstance(doc, dict):
        out = {key: map_json_texts(value, fn) for key, value in doc.items()}
        return doc if all(out[k] is v for k, v in doc.items()) else out
    if isinstance(doc, list):
        items = [map_json_texts(item, fn) for item in doc]
        return doc if all(a is b for a, b in zip(items, doc, strict=True)) else items
    return doc


def payload_texts(route: Route, payload: Any) -> list[str]:
    """Every text the model reads in a canonical payload the validator passed on (the invoker's view of a request)."""
    if route == "invoke":
        return json_texts(payload)
    from bulwark.validation.chat import ChatCompletionRequest, model_texts  # imported where used (models built)

    return model_texts(ChatCompletionRequest.model_validate(payload))
