"""The Powertools Logger of every function, with redaction before anything is written.

Redaction happens at the one place every log line passes through: the formatter's `serialize`, which receives the
finished structured record (message, extra keys, exception text and stack trace, context keys) as a dict and turns it
into the JSON line. Redacting the dict there, rather than the serialized string, means a secret cannot hide behind a
JSON escape (`\\nbwk_...`) and a redaction can never break the line's JSON.

What is redacted, whatever the level: values of credential-carrying keys (`Authorization`, `x-api-key`, `cookie`,
`password`...), Bulwark API keys, JWTs (and JWT-shaped garbage), bearer tokens, AWS access keys and secrets, other
providers' API tokens, `secret=...`-style assignments, private keys, and PII (email, phone, payment card, SSN, IBAN).
IP addresses are kept on purpose: the source address of a failure is what the alarms and the operator need.

Every pattern is precompiled and linear-time. The PII detector of `bulwark.guardrails.pii` is used when present
(imported on first use, so a function that never logs a long string never loads it); otherwise a small built-in set.
Redaction is idempotent (`redact(redact(x)) == redact(x)`), which the hash-chained audit records rely on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import IO, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

# Dict keys whose value is a credential, whatever it looks like (compared lower-cased, '-' and '_' alike).
_SENSITIVE_KEYS = frozenset(
    k.replace("-", "_")
    for k in (
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "apikey",
        "api_key",
        "key",
        "access_token",
        "id_token",
        "refresh_token",
        "token",
        "auth_token",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "secret_key",
        "aws_secret_access_key",
        "x-amz-security-token",
        "cookie",
        "set-cookie",
        "credential",
        "credentials",
        "private_key",
    )
)
# Machine-made identifiers (hashes, request and trace ids): random hex can look like a card number to a regex, and a
# redacted audit hash would break the chain. Exempt only while the value keeps an identifier's shape.
_ID_KEYS = frozenset(
    {"hash", "prev", "chain", "correlation_id", "request_id", "function_request_id", "xray_trace_id", "ts"}
)
_SYSTEM_KEYS = frozenset(
    {
        "level",
        "location",
        "timestamp",
        "service",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "xray_trace_id",
        "sampling_rate",
    }
)
_ID_SHAPE = re.compile(r"[0-9A-Za-z:._+-]{0,128}")

_PLACEHOLDER = "[REDACTED]"
_NOT_REDACTED = r"(?!\[REDACTED)"

# Credentials, applied first and always (they do not depend on the PII module).
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"bwk_[0-9A-Za-z_-]{4,200}"), "[REDACTED:API_KEY]"),
    # Any three dot-separated base64url runs starting like a JSON header: real JWTs and JWT-looking garbage alike.
    (re.compile(r"(?<![0-9A-Za-z_-])eyJ[0-9A-Za-z_-]{2,8192}(?:\.[0-9A-Za-z_-]{0,8192}){1,4}"), "[REDACTED:JWT]"),
    (re.compile(r"(?i)(\b(?:bearer|basic)[ \t]{1,5})" + _NOT_REDACTED + r"[^\s\"',;]{1,8192}"), r"\1[REDACTED]"),
    (
        re.compile(
            r"(?i)(\b(?:authorization|x-api-key|api[_-]?key|apikey|access[_-]?token|id[_-]?token|refresh[_-]?token"
            r"|token|secret|client[_-]?secret|password|passwd|credential)[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?)"
            + _NOT_REDACTED
            + r"(?!(?:bearer|basic)\b)[^\s\"',;&}]{1,8192}"
        ),
        r"\1[REDACTED]",
    ),
    (re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[0-9A-Z]{16}\b"), "[REDACTED:AWS_KEY]"),
)

# Fallback PII patterns, used only if bulwark.guardrails.pii is missing.
_FALLBACK_PII: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}\b"), "[REDACTED:EMAIL]"),
    (re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), "[REDACTED:CARD]"),
    (re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), "[REDACTED:SSN]"),
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), "[REDACTED:IBAN]"),
    (
        re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w)"),
        "[REDACTED:PHONE]",
    ),
)
_KEEP_KINDS = frozenset({"ipv4", "ipv6"})  # source addresses stay visible (see the module docstring)

_pii_lock = threading.Lock()
_pii_impl: list[Callable[[str], str]] = []


def _pii_redactor() -> Callable[[str], str]:
    if _pii_impl:
        return _pii_impl[0]
    with _pii_lock:
        if not _pii_impl:
            try:
                from bulwark.guardrails import pii
            except ImportError:  # pragma: no cover - the guardrails package ships with the layer
                _pii_impl.append(_fallback_pii)
            else:
                _pii_impl.append(_make_pii_redactor(pii.find_pii, pii.placeholder))
    return _pii_impl[0]


def _make_pii_redactor(find: Callable[[str], list[Any]], placeholder: Callable[[str], str]) -> Callable[[str], str]:
    def run(text: str) -> str:
        findings = [f for f in find(text) if f.kind not in _KEEP_KINDS]
        if not findings:
            return text
        out: list[str] = []
        pos = 0
        for f in findings:
            out.append(text[pos : f.start])
            out.append(placeholder(f.kind))
            pos = f.end
        out.append(text[pos:])
        return "".join(out)

    return run


def _fallback_pii(text: str) -> str:
    for pattern, repl in _FALLBACK_PII:
        text = pattern.sub(repl, text)
    return text


# An AWS secret access key without its label: 40 base64 characters mixing cases and digits (hex digests, ids and
# hashes are single-case, so they are left alone).
_BARE_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _bare_secret(m: re.Match[str]) -> str:
    s = m.group(0)
    mixed = any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
    return "[REDACTED:AWS_SECRET]" if mixed else s


# Exact values known to be secret (upstream API keys read from Secrets Manager): redacted wherever they appear.
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact this exact value from every later log line (call it where a secret is read, e.g. an upstream key)."""
    if value and len(value) >= 8 and value not in _known_secrets:
        _known_secrets.add(value)
        _redact_short.cache_clear()


# A cheap superset of every pattern above and in bulwark.guardrails.pii: a string it does not match cannot hold a
# credential or PII shape, so most log values (codes, names, ids) skip the full scan. One linear pass in C.
_SUSPECT = re.compile(
    r"bwk_|eyJ|@|\d[ .()+-]?\d[ .()+-]?\d|[A-Za-z0-9/+_-]{20}|PRIVATE KEY|[A-Z]{2}\d\d|xox"
    r"|(?i:bearer|basic|auth|key|token|secret|passw|credential|cookie|aws)"
)


def redact(text: str) -> str:
    """`text` with every credential and PII shape replaced by a typed placeholder. Idempotent."""
    if len(text) < 6:
        return text
    if len(text) <= _MEMO_MAX_CHARS:
        return _redact_short(text)
    return _redact_now(text)


# Log lines repeat the same short values request after request (principal, route, source address, ARNs), and a full
# scan of one costs about 50 us: short values are remembered. The memo is dropped when a new secret is registered,
# so a value scanned before the secret was known is scanned again.
_MEMO_MAX_CHARS = 256


@lru_cache(maxsize=4096)
def _redact_short(text: str) -> str:
    return _redact_now(text)


def _redact_now(text: str) -> str:
    for secret in tuple(_known_secrets):
        if secret in text:
            text = text.replace(secret, "[REDACTED:SECRET]")
    if _SUSPECT.search(text) is None:
        return text
    return _redact_shapes(text)


def _redact_shapes(text: str) -> str:
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    text = _BARE_AWS_SECRET.sub(_bare_secret, text)
    return _pii_redactor()(text)


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


class Redacted(dict[str, Any]):
    """A record already passed through `redact_value` until stable (e.g. a sealed audit record): not scanned again."""


def redact_value(value: Any, key: str | None = None) -> Any:
    """A JSON-ready copy of `value` with credentials and PII redacted at any depth (dict keys included)."""
    if isinstance(value, Redacted):
        return value
    if key is not None:
        nk = _norm_key(key)
        if nk in _SENSITIVE_KEYS and value not in (None, "", [], {}):
            return _PLACEHOLDER
        if nk in _ID_KEYS and (
            isinstance(value, int | float) or (isinstance(value, str) and _ID_SHAPE.fullmatch(value))
        ):
            return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        # A card number or phone number logged as an integer.
        if abs(value) < 10**8:
            return value
        text = str(value)
        cleaned = redact(text)
        return value if cleaned == text else cleaned
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    return redact(str(value))  # what the JSON serializer would have written (json_default=str)


class RedactingFormatter(LambdaPowertoolsFormatter):
    """The Powertools JSON formatter, redacting the finished record before it is serialized."""

    def serialize(self, log: Any) -> str:
        if isinstance(log, dict):
            # Powertools' own top-level fields come from the Lambda context and the environment, not from a request.
            return super().serialize(
                {
                    k: (v if k in _SYSTEM_KEYS and isinstance(v, str | int | float | bool) else redact_value(v, k))
                    for k, v in log.items()
                }
            )
        return super().serialize(redact_value(log))


class RedactingFilter(logging.Filter):
    """For plain `logging` handlers outside Powertools: redacts message, args, extras and the exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        else:
            record.msg = redact_value(record.msg)
        if record.args:
            if isinstance(record.args, tuple):
                record.args = tuple(redact_value(a) for a in record.args)
            elif isinstance(record.args, Mapping):
                record.args = redact_value(record.args)
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS:
                record.__dict__[key] = redact_value(value, key)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def make_logger(service: str | None = None, *, stream: IO[str] | None = None) -> Logger:
    """The function's Logger. `stream` (default stdout) is for tests that capture the exact lines written."""
    log = Logger(service=service, utc=True, logger_formatter=RedactingFormatter(utc=True), stream=stream)
    handler = log.registered_handler
    if not isinstance(handler.formatter, RedactingFormatter):
        # A Logger of the same name was configured earlier without redaction (Powertools shares one per service):
        # redaction wins, keeping the keys already appended.
        previous = handler.formatter
        formatter = RedactingFormatter(utc=True)
        if isinstance(previous, LambdaPowertoolsFormatter):
            formatter.append_keys(**previous.log_format)
        handler.setFormatter(formatter)
    return log


# ------------------------------------------------------------------------------------------------------ body logging
MAX_LOGGED_BODY = 8192


def log_body(logger: Logger, kind: str, text: str | bytes | None, policy: Any) -> None:
    """Log a request or response body, redacted and truncated, only if the policy's `logging.log_bodies` is on.

    `policy` is the `Policy` or its `LoggingPolicy`. Off by default: bodies carry prompts, and prompts carry PII.
    """
    logging_policy = getattr(policy, "logging", policy)
    if not getattr(logging_policy, "log_bodies", False) or text is None:
        return
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    truncated = len(text) > MAX_LOGGED_BODY
    # Redact the whole text before cutting it, so a secret straddling the cut cannot leave a tail behind.
    body = redact(text)[:MAX_LOGGED_BODY]
    logger.info("body", extra={"body_kind": kind, "body": body, "body_truncated": truncated})
