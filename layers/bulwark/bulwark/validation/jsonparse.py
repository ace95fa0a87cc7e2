"""Hardened JSON parsing for untrusted request bodies.

The standard library parser does the syntax work (C speed, no backtracking); hooks and one iterative walk refuse what
RFC 8259 leaves ambiguous or what could make a downstream parser disagree with us: duplicate keys, deep nesting, huge
numbers, NaN/Infinity, lone surrogates, a byte-order mark. Every refusal is `InvalidJson`, never a 5xx, and no message
contains the input.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from bulwark.errors import InvalidJson, RequestTooLarge

_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")
# An escaped surrogate in the raw text is the only way a lone surrogate can reach a parsed string (strict UTF-8
# decoding refuses encoded ones), so the walk only checks strings when this cheap scan finds one. A body written
# mostly in escapes (what JSON encoders that keep to ASCII send for CJK text) has one every 6 characters, and there
# the scan cost more than checking the decoded strings: beyond _MANY_ESCAPES, the strings are checked directly.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MANY_ESCAPES = 4096


class _Refused(ValueError):
    """Raised inside parser hooks; carries a message that is safe to show."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("The request body contains a duplicate object key.")
    return obj


def _refuse_constant(_name: str) -> Any:
    raise _Refused("The request body contains NaN or Infinity, which JSON does not allow.")


@functools.lru_cache(maxsize=8)
def _decoder(max_digits: int) -> json.JSONDecoder:
    """One decoder per digit cap: building one (and its C scanner) costs more than decoding a typical body."""
    parse_int, parse_float = _make_number_hooks(max_digits)
    return json.JSONDecoder(
        object_pairs_hook=_pairs_hook, parse_int=parse_int, parse_float=parse_float, parse_constant=_refuse_constant
    )


def _make_number_hooks(max_digits: int) -> tuple[Any, Any]:
    def parse_int(s: str) -> int:
        if len(s) - (s[0] == "-") > max_digits:
            raise _Refused(f"The request body contains a number with more than {max_digits} digits.")
        return int(s)

    def parse_float(s: str) -> float:
        digits = sum(c.isdigit() for c in s)
        if digits > max_digits:
            raise _Refused(f"The request body contains a number with more than {max_digits} digits.")
        value = float(s)
        if not math.isfinite(value):
            raise _Refused("The request body contains a number too large to represent.")
        return value

    return parse_int, parse_float


def _check_tree(doc: Any, max_depth: int, check_strings: bool) -> None:
    """Iterative walk: depth cap and (when needed) lone surrogates in keys and strings."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise _Refused(f"The request body is nested deeper than {max_depth} levels.")
            for k, v in node.items():
                if check_strings and _SURROGATE.search(k):
                    raise _Refused("The request body contains an unpaired UTF-16 surrogate.")
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise _Refused(f"The request body is nested deeper than {max_depth} levels.")
            stack.extend((v, depth + 1) for v in node)
        elif check_strings and isinstance(node, str) and _SURROGATE.search(node):
            raise _Refused("The request body contains an unpaired UTF-16 surrogate.")


def _may_hold_lone_surrogates(text: str) -> bool:
    escapes = text.count("\\")  # one character: counted at memory speed; every escape starts with one
    return escapes > _MANY_ESCAPES or (escapes > 0 and _ESCAPED_SURROGATE.search(text) is not None)


def parse_json_body(body: bytes, *, max_bytes: int, max_depth: int, max_number_digits: int) -> Any:
    """Parse an untrusted body; `RequestTooLarge` before any parsing, `InvalidJson` for everything refused."""
    if len(body) > max_bytes:
        raise RequestTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    if not body.strip():
        raise InvalidJson("The request body is empty.")
    if body.startswith(_BOMS):
        raise InvalidJson("The request body starts with a byte-order mark; send UTF-8 without one.")
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidJson("The request body is not valid UTF-8.") from None
    try:
        doc = _decoder(max_number_digits).decode(text)
        _check_tree(doc, max_depth, check_strings=_may_hold_lone_surrogates(text))
    except _Refused as exc:
        raise InvalidJson(str(exc)) from None
    except json.JSONDecodeError as exc:
        # Position only: the parser's own message may quote the input.
        raise InvalidJson(
            f"The request body is not valid JSON (syntax error at line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise InvalidJson(f"The request body is nested deeper than {max_depth} levels.") from None
    except (ValueError, OverflowError):
        raise InvalidJson("The request body contains a value that cannot be represented.") from None
    return doc
