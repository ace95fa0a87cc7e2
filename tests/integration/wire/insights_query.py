"""An interpreter for the part of the CloudWatch Logs Insights query language the template's saved queries use.

Supported, with the service's documented meaning: commands `fields` (expressions, `as`), `filter`, `parse` (a regex
with named groups), `stats` (count(*), count, sum, avg, min, max, pct, count_distinct; arithmetic over them; `as`;
`by` fields), `sort` (one field, asc/desc), `limit`; `#` comments. Expressions: numbers, "strings", fields (dotted,
`@`-prefixed, or `backquoted`), + - * / %, = != < <= > >=, `like "substring"`, `like /regex/`, =~, and/or/not,
ispresent() and coalesce(). Anything else is a `QuerySyntaxError`: a saved query this fake cannot run fails its test
instead of passing on a guess.

What Insights leaves undocumented is fixed here, and said: a comparison with an absent field is false (the record is
filtered out); a `by` field a record lacks puts it in a group of its own whose row omits the field (the console shows a
blank cell); aggregates skip absent and non-numeric values and are absent when nothing is left; `pct` is the nearest
rank ("the value at which p percent of the values are lower", as the documentation puts it; the service estimates it
on large inputs); `count_distinct` is exact (the service approximates it at high cardinality); a `stats` over no
records gives no rows.

Records are log events: `@timestamp`, `@message`, `@logStream`, `@log`, and, for a JSON message, its fields flattened
with dots (`audit.verdicts.auth`) as Insights discovers them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]


class QuerySyntaxError(ValueError):
    """The query is not in the supported subset (or not valid): the message says where."""


# ------------------------------------------------------------------------------------------------------------- lexer
_WORD = re.compile(r"[@A-Za-z_][A-Za-z0-9_.@]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_OPERATORS = ("=~", "!=", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", "|")


@dataclass(frozen=True)
class Token:
    kind: str  # word, field (backquoted), number, string, op, end
    text: str
    pos: int
    value: Any = None


class _Lexer:
    """Tokens on demand: whether `/` opens a regex depends on what the parser expects, so the parser asks."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._peeked: Token | None = None

    def _skip(self) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isspace():
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def peek(self) -> Token:
        if self._peeked is None:
            self._peeked = self._next()
        return self._peeked

    def take(self) -> Token:
        token = self.peek()
        self._peeked = None
        return token

    def _next(self) -> Token:
        self._skip()
        start = self.pos
        if start >= len(self.text):
            return Token("end", "", start)
        ch = self.text[start]
        if ch in "\"'":
            return self._string(ch)
        if ch == "`":
            end = self.text.find("`", start + 1)
            if end < 0:
                raise QuerySyntaxError(f"unterminated `field` at {start}")
            self.pos = end + 1
            return Token("field", self.text[start : end + 1], start, self.text[start + 1 : end])
        if m := _NUMBER.match(self.text, start):
            self.pos = m.end()
            return Token("number", m.group(), start, float(m.group()) if "." in m.group() else int(m.group()))
        if m := _WORD.match(self.text, start):
            self.pos = m.end()
            return Token("word", m.group(), start, m.group())
        for op in _OPERATORS:
            if self.text.startswith(op, start):
                self.pos = start + len(op)
                return Token("op", op, start)
        raise QuerySyntaxError(f"unexpected {ch!r} at {start}")

    def _string(self, quote: str) -> Token:
        start, i, out = self.pos, self.pos + 1, []
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\\" and i + 1 < len(self.text):
                out.append(self.text[i + 1])
                i += 2
                continue
            if ch == quote:
                self.pos = i + 1
                return Token("string", self.text[start : i + 1], start, "".join(out))
            out.append(ch)
            i += 1
        raise QuerySyntaxError(f"unterminated string at {start}")

    def regex(self) -> re.Pattern[str]:
        """A /regex/ at the current position (Insights' named groups `(?<name>...)` become Python's)."""
        if self._peeked is not None:
            if self._peeked.text != "/":
                raise QuerySyntaxError(f"expected /regex/ at {self._peeked.pos}, found {self._peeked.text!r}")
            self.pos, self._peeked = self._peeked.pos, None
        self._skip()
        start = self.pos
        if not self.text.startswith("/", start):
            raise QuerySyntaxError(f"expected /regex/ at {start}")
        i = start + 1
        while i < len(self.text) and self.text[i] != "/":
            i += 2 if self.text[i] == "\\" else 1
        if i >= len(self.text):
            raise QuerySyntaxError(f"unterminated regex at {start}")
        self.pos = i + 1
        if self.pos < len(self.text) and self.text[self.pos].isalpha():
            raise QuerySyntaxError(f"regex flags are not supported (at {self.pos}); use (?i)")
        source = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", self.text[start + 1 : i])
        try:
            return re.compile(source)
        except re.error as exc:
            raise QuerySyntaxError(f"bad regex at {start}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Call:
    """A function, or an operator written as one: not(x), like(x, pattern) (a str pattern is a substring match)."""

    name: str
    args: tuple[Any, ...]  # () for count(*)
    aggregate: bool = False  # a stats function, evaluated over a group


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Named:
    expr: Any
    name: str


@dataclass
class Command:
    kind: str
    items: list[Named] = field(default_factory=list)
    by: list[Named] = field(default_factory=list)
    condition: Any = None
    source: Any = None
    pattern: re.Pattern[str] | None = None
    descending: bool = False
    count: int = 0


_ROW_FUNCTIONS = {"ispresent": 1, "coalesce": -1}
_AGGREGATES = {"count": 1, "sum": 1, "avg": 1, "min": 1, "max": 1, "pct": 2, "count_distinct": 1}
_COMMANDS = ("fields", "filter", "parse", "stats", "sort", "limit")
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")


# ------------------------------------------------------------------------------------------------------------ parser
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lex = _Lexer(text)
        self.in_stats = False

    def query(self) -> list[Command]:
        commands = [self.command()]
        while self.lex.peek().text == "|":
            self.lex.take()
            commands.append(self.command())
        end = self.lex.peek()
        if end.kind != "end":
            raise QuerySyntaxError(f"unexpected {end.text!r} at {end.pos}")
        return commands

    def command(self) -> Command:
        token = self.lex.take()
        if token.kind != "word" or token.text not in _COMMANDS:
            raise QuerySyntaxError(f"unsupported command {token.text!r} at {token.pos}")
        command: Command = getattr(self, f"command_{token.text}")(token)
        return command

    def command_fields(self, token: Token) -> Command:
        return Command(token.text, items=self.named_list())

    def command_filter(self, token: Token) -> Command:
        return Command(token.text, condition=self.expr())

    def command_parse(self, token: Token) -> Command:
        source = self.primary()
        if not isinstance(source, Field):
            raise QuerySyntaxError(f"parse needs a field at {token.pos}")
        if self.lex.peek().kind == "string":
            raise QuerySyntaxError(f"parse with a glob pattern is not supported (at {token.pos})")
        return Command(token.text, source=source, pattern=self.lex.regex())

    def command_stats(self, token: Token) -> Command:
        self.in_stats = True
        items = self.named_list()
        self.in_stats = False
        for item in items:
            if not _has_aggregate(item.expr):
                raise QuerySyntaxError(f"stats item {item.name!r} has no aggregate function")
        by: list[Named] = []
        if self.lex.peek().text == "by":
            self.lex.take()
            by = self.named_list()
            for group in by:
                if not isinstance(group.expr, Field):
                    raise QuerySyntaxError(f"stats ... by {group.name!r}: only fields are supported")
        return Command(token.text, items=items, by=by)

    def command_sort(self, token: Token) -> Command:
        target = self.primary()
        if not isinstance(target, Field):
            raise QuerySyntaxError(f"sort needs a field at {token.pos}")
        descending = False
        if self.lex.peek().text in ("asc", "desc"):
            descending = self.lex.take().text == "desc"
        if self.lex.peek().text == ",":
            raise QuerySyntaxError(f"sort by more than one field is not supported (at {token.pos})")
        return Command(token.text, items=[Named(target, target.name)], descending=descending)

    def command_limit(self, token: Token) -> Command:
        number = self.lex.take()
        if number.kind != "number" or not isinstance(number.value, int) or not 0 < number.value <= 10_000:
            raise QuerySyntaxError(f"limit needs a whole number 1..10000 at {number.pos}")
        return Command(token.text, count=number.value)

    def named_list(self) -> list[Named]:
        items = [self.named()]
        while self.lex.peek().text == ",":
            self.lex.take()
            items.append(self.named())
        return items

    def named(self) -> Named:
        start = self.lex.peek().pos
        expr = self.expr()
        end = self.lex.peek().pos if self.lex.peek().kind != "end" else len(self.text)
        if self.lex.peek().text == "as":
            self.lex.take()
            alias = self.lex.take()
            if alias.kind not in ("word", "field"):
                raise QuerySyntaxError(f"expected a name after 'as' at {alias.pos}")
            return Named(expr, str(alias.value))
        return Named(expr, expr.name if isinstance(expr, Field) else self.text[start:end].strip())

    # expressions, loosest first
    def _chain(self, operators: tuple[str, ...], operand: Callable[[], Any]) -> Any:
        """Left-associative operators of one precedence level."""
        left = operand()
        while self.lex.peek().text in operators:
            left = BinOp(self.lex.take().text, left, operand())
        return left

    def expr(self) -> Any:
        return self._chain(("or",), self.conjunction)

    def conjunction(self) -> Any:
        return self._chain(("and",), self.negation)

    def negation(self) -> Any:
        if self.lex.peek().text == "not":
            self.lex.take()
            return Call("not", (self.negation(),))
        return self.comparison()

    def comparison(self) -> Any:
        left = self.additive()
        token = self.lex.peek()
        if token.text in _COMPARISONS:
            self.lex.take()
            return BinOp(token.text, left, self.additive())
        negated = False
        if token.text == "not":
            self.lex.take()
            negated, token = True, self.lex.peek()
            if token.text != "like":
                raise QuerySyntaxError(f"expected 'like' after 'not' at {token.pos}")
        if token.text in ("like", "=~"):
            self.lex.take()
            quoted = self.lex.peek().kind == "string" and token.text == "like"
            like = Call("like", (left, Lit(str(self.lex.take().value) if quoted else self.lex.regex())))
            return Call("not", (like,)) if negated else like
        return left

    def additive(self) -> Any:
        return self._chain(("+", "-"), self.term)

    def term(self) -> Any:
        return self._chain(("*", "/", "%"), self.unary)

    def unary(self) -> Any:
        if self.lex.peek().text == "-":
            self.lex.take()
            return BinOp("-", Lit(0), self.unary())
        return self.primary()

    def primary(self) -> Any:
        token = self.lex.take()
        if token.kind in ("number", "string"):
            return Lit(token.value)
        if token.kind == "field":
            return Field(str(token.value))
        if token.text == "(":
            inner = self.expr()
            self._expect(")")
            return inner
        if token.kind == "word":
            if self.lex.peek().text == "(":
                return self.call(token)
            if token.text in ("and", "or", "not", "like", "as", "by", "asc", "desc", *_COMMANDS):
                raise QuerySyntaxError(f"unexpected {token.text!r} at {token.pos}")
            return Field(token.text)
        raise QuerySyntaxError(f"unexpected {token.text or 'end of query'!r} at {token.pos}")

    def call(self, name: Token) -> Any:
        self._expect("(")
        fn = name.text.lower()
        if fn in _AGGREGATES:
            if not self.in_stats:
                raise QuerySyntaxError(f"aggregate {fn}() outside stats at {name.pos}")
            if fn == "count" and self.lex.peek().text == "*":
                self.lex.take()
                self._expect(")")
                return Call("count", (), aggregate=True)
            self.in_stats = False  # no aggregate inside an aggregate
            args = self.args()
            self.in_stats = True
            if len(args) != _AGGREGATES[fn]:
                raise QuerySyntaxError(f"{fn}() takes {_AGGREGATES[fn]} argument(s), at {name.pos}")
            if fn == "pct" and not (isinstance(args[1], Lit) and isinstance(args[1].value, int | float)):
                raise QuerySyntaxError(f"pct() needs a literal percentile, at {name.pos}")
            return Call(fn, tuple(args), aggregate=True)
        if fn in _ROW_FUNCTIONS:
            args = self.args()
            arity = _ROW_FUNCTIONS[fn]
            if (arity >= 0 and len(args) != arity) or not args:
                raise QuerySyntaxError(f"{fn}() has the wrong number of arguments, at {name.pos}")
            return Call(fn, tuple(args))
        raise QuerySyntaxError(f"unsupported function {name.text}() at {name.pos}")

    def args(self) -> list[Any]:
        args = [] if self.lex.peek().text == ")" else [self.expr()]
        while self.lex.peek().text == ",":
            self.lex.take()
            args.append(self.expr())
        self._expect(")")
        return args

    def _expect(self, text: str) -> None:
        token = self.lex.take()
        if token.text != text:
            raise QuerySyntaxError(f"expected {text!r} at {token.pos}, found {token.text or 'end of query'!r}")


def _has_aggregate(node: Any) -> bool:
    if isinstance(node, Call):
        return node.aggregate or any(_has_aggregate(arg) for arg in node.args)
    if isinstance(node, BinOp):
        return _has_aggregate(node.left) or _has_aggregate(node.right)
    return False


def parse_query(text: str) -> list[Command]:
    """The query's commands, or QuerySyntaxError."""
    return _Parser(text).query()


# ---------------------------------------------------------------------------------------------------------- records
def event_record(group: str, event: dict[str, Any]) -> Record:
    """A log event as Insights sees it: its @ fields, and a JSON message's fields flattened with dots."""
    record: Record = {
        "@timestamp": event["timestamp"],
        "@message": event["message"],
        "@logStream": event["logStreamName"],
        "@log": f"000000000000:{group}",
    }
    try:
        parsed = json.loads(event["message"])
    except ValueError:
        return record
    if isinstance(parsed, dict | list):
        _flatten(parsed, "", record)
    return record


def _flatten(value: Any, prefix: str, out: Record) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}{index}.", out)
    else:
        out[prefix[:-1]] = value


# -------------------------------------------------------------------------------------------------------- evaluator
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return False
    a, b = _number(left), _number(right)
    if a is None or b is None:  # not both numbers: equality of the texts; no order
        if op in ("=", "!="):
            return (_text(left) == _text(right)) == (op == "=")
        return False
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _arith(op: str, left: Any, right: Any) -> float | None:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    return a / b if op == "/" else math.fmod(a, b)


def _eval(node: Any, record: Record, aggregate: Callable[[Call], Any] | None = None) -> Any:
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Field):
        return record.get(node.name)
    if isinstance(node, Call) and node.aggregate:
        assert aggregate is not None
        return aggregate(node)
    if isinstance(node, Call):
        values = (_eval(arg, record, aggregate) for arg in node.args)
        if node.name == "not":
            return next(values) is not True
        if node.name == "like":
            value, pattern = values
            if value is None:
                return False
            return pattern in _text(value) if isinstance(pattern, str) else pattern.search(_text(value)) is not None
        if node.name == "ispresent":
            return next(values) is not None
        return next((v for v in values if v is not None), None)  # coalesce
    assert isinstance(node, BinOp)
    return _eval_binop(node, record, aggregate)


def _eval_binop(node: BinOp, record: Record, aggregate: Callable[[Call], Any] | None) -> Any:
    if node.op == "and":
        return _eval(node.left, record, aggregate) is True and _eval(node.right, record, aggregate) is True
    if node.op == "or":
        return _eval(node.left, record, aggregate) is True or _eval(node.right, record, aggregate) is True
    left, right = _eval(node.left, record, aggregate), _eval(node.right, record, aggregate)
    if node.op in _COMPARISONS:
        return _compare(node.op, left, right)
    return _arith(node.op, left, right)


def _aggregate(agg: Call, records: list[Record]) -> Any:
    if agg.name == "count" and not agg.args:
        return len(records)
    values = [v for r in records if (v := _eval(agg.args[0], r)) is not None]
    if agg.name == "count":
        return len(values)
    if agg.name == "count_distinct":
        return len({_text(v) for v in values})
    numbers = sorted(n for v in values if (n := _number(v)) is not None)
    if not numbers:
        return None
    if agg.name == "sum":
        return math.fsum(numbers)
    if agg.name == "avg":
        return math.fsum(numbers) / len(numbers)
    if agg.name == "min":
        return numbers[0]
    if agg.name == "max":
        return numbers[-1]
    percent = float(agg.args[1].value)  # pct: nearest rank
    rank = max(1, math.ceil(len(numbers) * percent / 100))
    return numbers[min(rank, len(numbers)) - 1]


def _stats(command: Command, records: list[Record]) -> list[Record]:
    groups: dict[tuple[str | None, ...], list[Record]] = {}
    for record in records:
        key = tuple(None if (v := _eval(g.expr, record)) is None else _text(v) for g in command.by)
        groups.setdefault(key, []).append(record)
    rows: list[Record] = []
    for key, members in groups.items():
        row: Record = {g.name: value for g, value in zip(command.by, key, strict=True) if value is not None}

        def over_group(agg: Call, members: list[Record] = members) -> Any:
            return _aggregate(agg, members)

        for item in command.items:
            value = _eval(item.expr, members[0], over_group)
            if value is not None:
                row[item.name] = value
        rows.append(row)
    return rows


def _sort_key(value: Any) -> tuple[int, float, str]:
    number = _number(value)
    if value is None:
        return (2, 0.0, "")
    return (0, number, "") if number is not None else (1, 0.0, _text(value))


@dataclass
class Result:
    rows: list[list[dict[str, str]]]  # GetQueryResults' shape: each row a list of {field, value}
    records_matched: int
    records_scanned: int
    bytes_scanned: int


def run_query(text: str, records: Iterable[Record], *, default_limit: int = 10_000) -> Result:
    """Run `text` over `records` (from `event_record`), as GetQueryResults would answer it."""
    commands = parse_query(text)
    current = list(records)
    scanned = len(current)
    scanned_bytes = sum(len(str(r.get("@message", "")).encode()) for r in current)
    shown: list[str] = []
    matched: int | None = None  # events that reached stats (Insights' recordsMatched), or the rows without stats
    limit = default_limit
    for command in commands:
        if command.kind == "filter":
            current = [r for r in current if _eval(command.condition, r) is True]
        elif command.kind == "fields":
            for r in current:
                _set(r, {item.name: _eval(item.expr, r) for item in command.items})
            shown += [item.name for item in command.items if item.name not in shown]
        elif command.kind == "parse":
            assert command.pattern is not None
            for r in current:
                source = _eval(command.source, r)
                match = command.pattern.search(_text(source)) if source is not None else None
                _set(r, {name: match.group(name) if match else None for name in command.pattern.groupindex})
        elif command.kind == "stats":
            matched = len(current)
            current = _stats(command, current)
            shown = [g.name for g in command.by] + [i.name for i in command.items]
        elif command.kind == "sort":
            name = command.items[0].name
            present = [r for r in current if r.get(name) is not None]
            absent = [r for r in current if r.get(name) is None]
            present.sort(key=lambda r: _sort_key(r[name]), reverse=command.descending)
            current = present + absent
        else:  # limit
            current = current[: command.count]
            limit = min(limit, command.count)
    if not shown:
        shown = ["@timestamp", "@message"]
    rows = [
        [{"field": name, "value": _shown(name, r[name])} for name in shown if r.get(name) is not None]
        for r in current[:limit]
    ]
    return Result(rows, len(current) if matched is None else matched, scanned, scanned_bytes)


def _set(record: Record, values: dict[str, Any]) -> None:
    """New fields on a record; an absent value removes the field, as a null does in Insights."""
    for name, value in values.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value


def _shown(name: str, value: Any) -> str:
    if name == "@timestamp" and isinstance(value, int):
        moment = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{value % 1000:03d}"
    return _text(value)
