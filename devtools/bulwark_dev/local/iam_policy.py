"""IAM policy evaluation for the local stack: the decision AWS makes for one request of one principal.

Why written here: the package index was searched for a maintained evaluator that decides a single request (action,
resource, condition context) the way IAM does. ``policyuniverse`` parses policies and expands wildcards but does not
evaluate conditions; ``iam-ape`` computes a principal's effective permission set, not a decision for a request and
its context keys; ``aws-why`` ships as a native binary CLI. None gives "this call, with these condition keys, is
allowed", so this module implements the documented logic for what Bulwark's template uses, and its tests pin it:

- an explicit Deny anywhere wins over any Allow; no matching Allow is an implicit deny;
- ``Action``/``NotAction`` match case-insensitively with ``*`` and ``?``; ``Resource``/``NotResource`` case-sensitively;
- every key of a ``Condition`` block must hold (AND), any value of one key may match (OR);
- operators: String*, Arn*, Numeric*, Bool, Null, with ``IfExists`` and the ``ForAllValues:``/``ForAnyValue:`` set
  qualifiers; a key the request does not carry fails a positive operator and satisfies a negated one, as AWS does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

ContextValue = str | bool | int | float | Sequence[str]


class PolicyError(ValueError):
    """A policy document this evaluator cannot read (an unknown operator is an error, never silently true)."""


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@lru_cache(maxsize=4096)
def _pattern(glob: str, ignore_case: bool) -> re.Pattern[str]:
    # IAM wildcards are only * and ?; fnmatch would also treat [ ] as a class, so escape everything else first.
    parts = ["." + ("*" if char == "*" else "") if char in "*?" else re.escape(char) for char in glob]
    return re.compile("".join(parts) + r"\Z", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(glob: str, value: str, *, ignore_case: bool = False) -> bool:
    return _pattern(glob, ignore_case).match(value) is not None


@dataclass(frozen=True, slots=True)
class Statement:
    effect: Literal["Allow", "Deny"]
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    resources: tuple[str, ...]
    not_resources: tuple[str, ...]
    condition: Mapping[str, Mapping[str, tuple[str, ...]]]
    principals: tuple[str, ...] = ()  # a resource policy's Principal.AWS ("*" for anyone); empty in identity policies
    sid: str = ""
    source: str = ""  # where it came from, e.g. "AuthorizerRole/bulwark-authorizer" (for messages and tests)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, source: str = "", index: int = 0) -> Statement:
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"{source}: statement {index} has Effect {effect!r}")
        condition: dict[str, dict[str, tuple[str, ...]]] = {}
        for operator, keys in (raw.get("Condition") or {}).items():
            _check_operator(str(operator))
            if not isinstance(keys, Mapping):
                raise PolicyError(f"{source}: condition {operator} is not a mapping")
            condition[str(operator)] = {str(k): tuple(_scalar(v) for v in _as_list(vals)) for k, vals in keys.items()}
        statement = cls(
            effect=effect,
            actions=tuple(str(a) for a in _as_list(raw.get("Action"))),
            not_actions=tuple(str(a) for a in _as_list(raw.get("NotAction"))),
            resources=tuple(str(r) for r in _as_list(raw.get("Resource"))),
            not_resources=tuple(str(r) for r in _as_list(raw.get("NotResource"))),
            condition=condition,
            principals=_principals(raw.get("Principal")),
            sid=str(raw.get("Sid") or f"#{index}"),
            source=source,
        )
        if bool(statement.actions) == bool(statement.not_actions):
            raise PolicyError(f"{source}/{statement.sid}: exactly one of Action and NotAction")
        if bool(statement.resources) == bool(statement.not_resources):
            raise PolicyError(f"{source}/{statement.sid}: exactly one of Resource and NotResource")
        return statement

    @property
    def name(self) -> str:
        return f"{self.source}/{self.sid}" if self.source else self.sid

    def matches(self, action: str, resource: str, context: Mapping[str, ContextValue]) -> bool:
        if self.actions:
            if not any(wildcard_match(a, action, ignore_case=True) for a in self.actions):
                return False
        elif any(wildcard_match(a, action, ignore_case=True) for a in self.not_actions):
            return False
        if self.resources:
            if not any(wildcard_match(r, resource) for r in self.resources):
                return False
        elif any(wildcard_match(r, resource) for r in self.not_resources):
            return False
        return all(
            condition_holds(operator, key, values, context)
            for operator, keys in self.condition.items()
            for key, values in keys.items()
        )


def _principals(raw: Any) -> tuple[str, ...]:
    if raw == "*":
        return ("*",)
    if isinstance(raw, Mapping):
        return tuple(str(p) for p in _as_list(raw.get("AWS")))
    return ()


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Literal["allowed", "explicit_deny", "implicit_deny"]
    statement: Statement | None = None  # the Deny that refused, or the Allow that admitted

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True, slots=True)
class Policy:
    statements: tuple[Statement, ...] = field(default=())

    @classmethod
    def parse(cls, document: Mapping[str, Any], *, source: str = "") -> Policy:
        return cls(
            tuple(
                Statement.parse(raw, source=source, index=index)
                for index, raw in enumerate(_as_list(document.get("Statement")))
            )
        )


def evaluate(
    statements: Iterable[Statement], action: str, resource: str, context: Mapping[str, ContextValue] | None = None
) -> Decision:
    """IAM's decision for one (action, resource) under the given identity statements."""
    context = context or {}
    allowed_by: Statement | None = None
    for statement in statements:
        if not statement.matches(action, resource, context):
            continue
        if statement.effect == "Deny":
            return Decision(False, "explicit_deny", statement)
        allowed_by = allowed_by or statement
    if allowed_by is not None:
        return Decision(True, "allowed", allowed_by)
    return Decision(False, "implicit_deny")


# ------------------------------------------------------------------------------------------------------ conditions

_STRING_OPS = {
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
}
_ARN_OPS = {"ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike"}
_NUMERIC_OPS = {
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
}
_OPERATORS = _STRING_OPS | _ARN_OPS | _NUMERIC_OPS | {"Bool", "Null"}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"}


def _split_operator(operator: str) -> tuple[str | None, str, bool]:
    qualifier: str | None = None
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
        if qualifier not in ("ForAllValues", "ForAnyValue"):
            raise PolicyError(f"unknown condition set qualifier {qualifier!r}")
    if_exists = operator.endswith("IfExists") and operator != "IfExists"
    base = operator.removesuffix("IfExists") if if_exists else operator
    if base not in _OPERATORS or (if_exists and base == "Null"):
        raise PolicyError(f"unsupported condition operator {operator!r}")
    return qualifier, base, if_exists


def _check_operator(operator: str) -> None:
    _split_operator(operator)


def _context_values(context: Mapping[str, ContextValue], key: str) -> list[str] | None:
    # Condition keys are case-insensitive; their values are not.
    for name, value in context.items():
        if name.lower() == key.lower():
            if isinstance(value, str | bool | int | float):
                return [_scalar(value)]
            return [str(item) for item in value]
    return None


def _one(base: str, policy_value: str, request_value: str) -> bool:
    """Does one request value satisfy one policy value under the (positive form of the) operator?"""
    if base in ("StringEquals", "StringNotEquals"):
        return policy_value == request_value
    if base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return policy_value.casefold() == request_value.casefold()
    if base in ("StringLike", "StringNotLike"):
        return wildcard_match(policy_value, request_value)
    if base in ("ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike"):
        return _arn_like(policy_value, request_value)
    if base == "Bool":
        return policy_value.lower() == request_value.lower()
    try:
        left, right = float(request_value), float(policy_value)
    except ValueError:
        return False
    return {
        "NumericEquals": left == right,
        "NumericNotEquals": left != right,
        "NumericLessThan": left < right,
        "NumericLessThanEquals": left <= right,
        "NumericGreaterThan": left > right,
        "NumericGreaterThanEquals": left >= right,
    }[base]


def _arn_like(pattern: str, arn: str) -> bool:
    # ARN operators compare the six colon-separated parts one by one (a wildcard never crosses a colon).
    pattern_parts, arn_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_parts) != 6 or len(arn_parts) != 6:
        return False
    return all(wildcard_match(p, a) for p, a in zip(pattern_parts, arn_parts, strict=True))


def condition_holds(operator: str, key: str, policy_values: Sequence[str], context: Mapping[str, ContextValue]) -> bool:
    qualifier, base, if_exists = _split_operator(operator)
    request = _context_values(context, key)
    if base == "Null":
        absent = request is None or request == []
        return any((value.lower() == "true") == absent for value in policy_values)
    if request is None:
        if qualifier == "ForAllValues":
            return True  # vacuously: every one of no values is in the set (AWS's documented behaviour)
        return if_exists or base in _NEGATED
    negated = base in _NEGATED

    def matched(value: str) -> bool:
        return any(_one(base, policy_value, value) for policy_value in policy_values)

    if qualifier == "ForAllValues":
        return all((not matched(value)) if negated else matched(value) for value in request)
    if qualifier == "ForAnyValue":
        return any((not matched(value)) if negated else matched(value) for value in request)
    if len(request) != 1:
        # A single-valued operator on a multivalued key: AWS compares against any value; be strict (fail closed).
        return False
    return (not matched(request[0])) if negated else matched(request[0])
