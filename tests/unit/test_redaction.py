"""Redaction before anything is written: every credential and PII shape, in every place a log line can carry it.

The Powertools JSON output itself is captured and searched, so what is tested is what CloudWatch would receive.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.observability.logs import (
    RedactingFilter,
    log_body,
    make_logger,
    redact,
    redact_value,
    register_secret,
)
from bulwark.observability.metrics import count, make_metrics
from bulwark.policy import LoggingPolicy

# (what it is, the secret as sent, text around it)
SECRETS: list[tuple[str, str]] = [
    ("bulwark api key", "bwk_0123456789ab_AbCdEfGhIjKlMnOpQrStUvWxYz012345abcdef"),
    ("short bwk key", "bwk_wrongkey99"),
    ("jwt", "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhZG1pbiJ9.c2lnbmF0dXJlLXZhbHVlLTEyMw"),
    ("jwt-looking garbage", "eyJnotreally.garbage-part.more_garbage"),
    ("openai key", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("aws access key id", "AKIAIOSFODNN7EXAMPLE"),
    ("aws secret access key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("github token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("email", "jane.doe+test@example.co.uk"),
    ("phone", "+1 415-555-0132"),
    ("card", "4111 1111 1111 1111"),
    ("card digits", "5500000000000004"),
    ("ssn", "123-45-6789"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
]

# Free-form credentials: no shape to recognise, so they are redacted by the key or label they travel under.
LABELLED: list[tuple[str, str]] = [
    ("authorization header", "Authorization: Bearer opaque-token-value-xyz"),
    ("bearer lowercase", "bearer Zm9vYmFyYmF6cXV4"),
    ("x-api-key header", "x-api-key: not-a-real-key-garbage"),
    ("query api_key", "GET /v1/models?api_key=plain-query-credential&x=1"),
    ("password assignment", 'password="hunter2hunter2"'),
    ("token assignment", "token=opaque123456"),
]


def _capture(level: int = logging.DEBUG) -> tuple[Any, io.StringIO]:
    buf = io.StringIO()
    log = make_logger(f"redaction-{uuid.uuid4().hex[:8]}", stream=buf)
    log.setLevel(level)
    return log, buf


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def _assert_absent(output: str, secret: str) -> None:
    assert secret not in output, f"{secret!r} leaked into: {output[:2000]}"
    # and not in a JSON-escaped form either
    escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
    assert escaped not in output


class _Boom(Exception):
    pass


def _fail_with(secret: str) -> None:
    token = secret  # a local: stack-trace serializers must not print it
    raise _Boom(f"upstream refused credential {token}")


@pytest.mark.parametrize(("what", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_shape_redacted_everywhere(what: str, secret: str) -> None:
    # Given a logger at DEBUG
    log, buf = _capture()
    # When the secret appears in every place a log line can carry it, at every level
    log.debug(f"debug message with {secret} inside")
    log.info("args form %s and %r", secret, secret)
    log.warning("extra form", extra={"detail": f"value {secret}", "nested": {"list": [secret, {"deep": secret}]}})
    log.error({"message_as_dict": secret, secret: "as a key"})
    log.critical("bytes form", extra={"raw": f"x {secret} y".encode()})
    try:
        _fail_with(secret)
    except _Boom:
        log.exception("exception with trace")
    try:
        try:
            _fail_with(secret)
        except _Boom as inner:
            raise RuntimeError(f"wrapped: {secret}") from inner
    except RuntimeError:
        log.error("chained exception", exc_info=True)
    # Then none of it is in the output, and every line is still one valid JSON object
    out = buf.getvalue()
    _assert_absent(out, secret)
    lines = _lines(buf)
    assert len(lines) == 7
    assert any("exception" in line and "_Boom" in line["exception"] for line in lines)
    assert "[REDACTED" in out


@pytest.mark.parametrize(("what", "text"), LABELLED, ids=[s[0] for s in LABELLED])
def test_labelled_credentials_redacted(what: str, text: str) -> None:
    secret = text.split("=", 1)[-1].split(": ", 1)[-1].split(" ", 1)[-1].split("&", maxsplit=1)[0].strip('"')
    log, buf = _capture()
    log.info(f"saw {text}")
    try:
        raise ValueError(text)
    except ValueError:
        log.exception("failed")
    _assert_absent(buf.getvalue(), secret)


def test_credential_keys_redacted_whatever_the_value() -> None:
    # Given an API Gateway event with credentials in headers and the query string
    event = {
        "headers": {"Authorization": "Bearer totally-opaque-value", "X-Api-Key": "opaque2", "Cookie": "sid=abc123"},
        "multiValueHeaders": {"authorization": ["Bearer totally-opaque-value"]},
        "queryStringParameters": {"api_key": "querycred1", "access_token": "querycred2", "model": "demo"},
    }
    log, buf = _capture()
    log.info(event)
    log.info("event", extra={"event": event})
    out = buf.getvalue()
    for secret in ("totally-opaque-value", "opaque2", "sid=abc123", "querycred1", "querycred2"):
        _assert_absent(out, secret)
    assert '"model":"demo"' in out  # ordinary values stay


def test_ip_addresses_and_ids_are_kept() -> None:
    log, buf = _capture()
    rid = str(uuid.uuid4())
    log.info("failure", extra={"source_ip": "203.0.113.7", "ipv6": "2001:db8::7", "request_id": rid})
    line = _lines(buf)[0]
    assert line["source_ip"] == "203.0.113.7"
    assert line["ipv6"] == "2001:db8::7"
    assert line["request_id"] == rid


def test_identifier_keys_are_only_exempt_with_an_identifier_shape() -> None:
    out = redact_value({"hash": "4111111111111111" + "a" * 48, "request_id": "mail jane@example.com"})
    assert out["hash"].startswith("4111111111111111")  # a hash is machine-made: never mistaken for a card
    assert "jane@example.com" not in out["request_id"]  # but a PII-shaped value under that key is redacted


def test_registered_secret_redacted_verbatim() -> None:
    # An upstream secret with no recognisable shape, registered where it is read
    value = f"opaque{uuid.uuid4().hex[:10]}"
    register_secret(value)
    log, buf = _capture()
    log.warning(f"upstream answered 401 for {value}")
    _assert_absent(buf.getvalue(), value)


def test_card_number_logged_as_int() -> None:
    log, buf = _capture()
    log.info("n", extra={"card": 4111111111111111, "count": 12345})
    line = _lines(buf)[0]
    assert line["card"] != 4111111111111111
    assert line["count"] == 12345


def test_plain_logging_handler_with_filter() -> None:
    # A stdlib handler (not Powertools) gets the same protection through RedactingFilter
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(message)s %(detail)s"))
    std = logging.getLogger(f"plain-{uuid.uuid4().hex[:6]}")
    std.addHandler(handler)
    std.setLevel(logging.INFO)
    secret = SECRETS[0][1]
    std.info("key %s", secret, extra={"detail": secret})
    try:
        _fail_with(secret)
    except _Boom:
        std.exception("x %s", "y", extra={"detail": "-"})
    _assert_absent(buf.getvalue(), secret)


def test_preconfigured_logger_gets_redaction() -> None:
    # Given a Powertools Logger of the same service created earlier without redaction
    from aws_lambda_powertools import Logger

    name = f"pre-{uuid.uuid4().hex[:6]}"
    buf = io.StringIO()
    Logger(service=name, stream=buf)
    log = make_logger(name)
    log.info("key bwk_0123456789ab_secretsecretsecret")
    assert "bwk_0123456789ab" not in buf.getvalue()


def test_bodies_not_logged_by_default_and_redacted_when_on() -> None:
    log, buf = _capture()
    body = '{"messages":[{"role":"user","content":"my card is 4111 1111 1111 1111, mail jane@example.com"}]}'
    log_body(log, "request", body, LoggingPolicy())
    assert buf.getvalue() == ""
    log_body(log, "request", body, LoggingPolicy(log_bodies=True))
    line = _lines(buf)[0]
    assert line["body_kind"] == "request"
    assert "4111" not in line["body"] and "jane@example.com" not in line["body"]
    assert "[REDACTED:CARD]" in line["body"]


def test_long_body_truncated_after_redaction() -> None:
    log, buf = _capture()
    body = "x" * 8180 + " jane.doe@example.com " + "y" * 100
    log_body(log, "response", body.encode(), LoggingPolicy(log_bodies=True))
    line = _lines(buf)[0]
    assert line["body_truncated"] is True
    assert "jane.doe" not in line["body"] and "jane" not in line["body"][-10:]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcXYZ019 -_.@+:=/\"'eyJbwkAKIAbearer")), max_size=120))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(
    "adversarial",
    [
        "eyJ" * 70_000,
        "eyJ" + "a" * 200_000,
        "bwk_" * 50_000,
        "1-" * 100_000,
        "a@" * 100_000,
        "token=" * 30_000,
        "Bearer " * 30_000,
        "A1b/" * 50_000,
        "1 " * 100_000,
    ],
    ids=["eyJ", "eyJ-run", "bwk", "digits", "at", "token", "bearer", "base64", "spaced-digits"],
)
def test_redaction_is_linear_time(adversarial: str) -> None:
    started = time.perf_counter()
    redact(adversarial)
    assert time.perf_counter() - started < 2.0


def test_typical_line_is_cheap() -> None:
    msg = "upstream call failed for model demo-chat after 3 attempts (request 4c6f2d1e-0000-4000-8000-000000000000)"
    started = time.perf_counter()
    for _ in range(2000):
        redact(msg)
    per_call_us = (time.perf_counter() - started) / 2000 * 1e6
    assert per_call_us < 500


def test_dimensioned_metric_emits_service_and_breakdown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Bulwark")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "bulwark-authorizer")
    metrics = make_metrics(make_logger(stream=io.StringIO()))
    count(metrics, "AuthFailures", reason="wrong_secret")
    count(metrics, "AuthFailures", reason="bwk_0123456789ab_secretsecretsecret")  # never a free-form value
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(blobs) == 2
    first = blobs[0]
    cw = first["_aws"]["CloudWatchMetrics"][0]
    assert cw["Namespace"] == "Bulwark"
    assert cw["Dimensions"] == [["service"], ["service", "reason"]]
    assert cw["Metrics"] == [{"Name": "AuthFailures", "Unit": "Count"}]
    assert first["service"] == "bulwark-authorizer" and first["reason"] == "wrong_secret"
    assert first["AuthFailures"] in (1, [1.0])
    assert blobs[1]["reason"] == "other"


def test_a_value_seen_before_its_secret_was_registered_is_redacted_afterwards() -> None:
    # Short values are memoised (log lines repeat them); registering a secret must not leave a stale clean answer.
    from bulwark.observability.logs import redact, register_secret

    value = "moonlit-harbor-Zq81"  # no credential shape: only its registration makes it secret
    line = f"calling with {value}"
    assert redact(line) == line
    register_secret(value)
    assert value not in redact(line)
    assert value not in redact(line)  # and from the memo too
