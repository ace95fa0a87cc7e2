"""The JSON Schema validator of the policy's AppConfig profile, made from the pydantic model.

AppConfig validates a hosted configuration version against a JSON Schema validator of the draft-04 dialect, and the
validator's content is at most 32 KiB. Pydantic writes draft 2020-12 (``$defs``, ``const``, numeric
``exclusiveMinimum``), so this translates it, and leaves out what only documents (titles, defaults, descriptions).
template.yaml carries the result (`bulwark policy schema --appconfig` prints it); a unit test keeps the two equal.
"""

from __future__ import annotations

import json
from typing import Any

from bulwark.policy import policy_json_schema

DRAFT_04 = "http://json-schema.org/draft-04/schema#"
MAX_VALIDATOR_BYTES = 32_768  # AppConfig's limit on a validator's Content
_DOCUMENTATION = frozenset({"title", "default", "description", "examples"})


def _draft4(node: Any) -> Any:
    if isinstance(node, list):
        return [_draft4(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DOCUMENTATION:
            continue
        if key == "$defs":
            out["definitions"] = {name: _draft4(schema) for name, schema in value.items()}
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = value.replace("#/$defs/", "#/definitions/")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _draft4(schema) for name, schema in value.items()}  # property names kept as they are
        else:
            out[key] = _draft4(value)
    return out


def appconfig_policy_schema() -> dict[str, Any]:
    """The policy's JSON Schema in draft 04, for AppConfig's JSON_SCHEMA validator."""
    return {"$schema": DRAFT_04, **_draft4(policy_json_schema())}


def appconfig_policy_schema_text() -> str:
    """As template.yaml holds it: compact JSON, keys sorted."""
    text = json.dumps(appconfig_policy_schema(), separators=(",", ":"), sort_keys=True)
    if len(text.encode("utf-8")) > MAX_VALIDATOR_BYTES:
        raise ValueError(f"the policy schema is {len(text)} bytes; AppConfig validators take {MAX_VALIDATOR_BYTES}")
    return text
