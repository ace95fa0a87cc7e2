"""Powertools Logger, Metrics and Tracer for every function, with redaction before anything is written.

Every log record passes through `RedactingFilter` first: API keys, JWTs, Authorization/x-api-key values and upstream
secrets are replaced whatever the log level, including in exception traces.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

# Patterns for credentials that must never reach a log line.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"bwk_[0-9A-Za-z_]{8,80}"), "[REDACTED:API_KEY]"),
    (re.compile(r"eyJ[0-9A-Za-z_-]{4,}\.[0-9A-Za-z_-]{4,}\.[0-9A-Za-z_-]*"), "[REDACTED:JWT]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]{6,}"), r"\1[REDACTED]"),
    (
        re.compile(
            r"(?i)((?:authorization|x-api-key|api[_-]?key|secret|password|token)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',}]{4,}"
        ),
        r"\1[REDACTED]",
    ),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[REDACTED:AWS_ACCESS_KEY]"),
)


def redact(text: str) -> str:
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: ("[REDACTED]" if str(k).lower() in {"authorization", "x-api-key"} else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif isinstance(record.msg, dict):
            record.msg = _redact_value(record.msg)
        if record.args:
            record.args = (
                tuple(_redact_value(a) for a in record.args) if isinstance(record.args, tuple) else record.args
            )
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS:
                record.__dict__[key] = _redact_value(value)
        if record.exc_info and record.exc_info[1] is not None:
            # Render the trace now, redacted, so the formatter cannot print the raw one.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def make_logger(service: str | None = None) -> Logger:
    log = Logger(service=service, utc=True)
    log.addFilter(RedactingFilter())
    for handler in log.handlers:
        handler.addFilter(RedactingFilter())
    return log


def make_metrics() -> Metrics:
    return Metrics()


def make_tracer() -> Tracer:
    return Tracer()
