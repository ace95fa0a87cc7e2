"""Validation of `POST /v1/models/{model}/invoke` bodies against the model's JSON Schema from the policy.

fastjsonschema compiles a schema to a plain Python function (pure Python, no native wheels, small layer); compiled
validators are cached by the schema's canonical text, so a policy reload with the same schema costs nothing.
Messages name the JSON path and the failed rule, never the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from bulwark.errors import InvalidRequest

Validator = Callable[[Any], Any]


@lru_cache(maxsize=64)
def _compile(schema_text: str) -> Validator:
    import fastjsonschema

    # Remote $ref resolution would be a network fetch driven by configuration; refuse it.
    validator: Validator = fastjsonschema.compile(json.loads(schema_text), handlers={}, use_formats=True)
    return validator


def compile_schema(schema: dict[str, Any]) -> Validator:
    """The cached validator for `schema` (compile errors surface at policy load through `bulwark policy check`)."""
    return _compile(json.dumps(schema, sort_keys=True, separators=(",", ":")))


def _json_path(name: str) -> str:
    # fastjsonschema names the failing value like "data.input[0]" or "data" for the root.
    return "$" + name[len("data") :] if name.startswith("data") else "$"


def validate_invoke_body(doc: Any, schema: dict[str, Any]) -> None:
    """Raise `InvalidRequest(param=<JSON path>)` when `doc` does not satisfy `schema`."""
    import fastjsonschema

    validator = compile_schema(schema)
    try:
        validator(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = _json_path(str(exc.name or "data"))
        rule = str(exc.rule or "schema")
        raise InvalidRequest(
            f"'{path}' does not satisfy the model's input schema (rule: {rule}).", code="invalid_value", param=path
        ) from None
