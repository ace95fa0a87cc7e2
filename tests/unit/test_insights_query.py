"""The Logs Insights interpreter behind the CloudWatch Logs wire server: every saved query in template.yaml parses and
runs under it, its semantics are the documented ones, and syntax outside its subset is refused, not guessed at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulwark_dev.insights_report import REPORT_QUERIES
from bulwark_dev.local.template_model import load_template
from tests.integration.wire.insights_query import QuerySyntaxError, event_record, parse_query, run_query

ROOT = Path(__file__).resolve().parents[2]


def _events(*audits: dict[str, Any], extra: list[str] | None = None) -> list[dict[str, Any]]:
    messages = [json.dumps({"level": "INFO", "message": "audit", "audit": a}, separators=(",", ":")) for a in audits]
    return [
        event_record("/aws/lambda/x", {"timestamp": 1_000 * (i + 1), "logStreamName": f"s{i % 2}", "message": m})
        for i, m in enumerate([*messages, *(extra or [])])
    ]


def _rows(query: str, records: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{c["field"]: c["value"] for c in row} for row in run_query(query, records).rows]


def test_every_saved_query_in_the_template_parses_and_runs() -> None:
    # Given every AWS::Logs::QueryDefinition of the template (five for operators, five for `bulwark report --stack`)
    queries = load_template(ROOT / "template.yaml", stack_name="s").query_definitions
    names = {q.name for q in queries}
    assert {f"s/report/{n}" for n in REPORT_QUERIES} <= names
    records = _events(
        {"status": 200, "principal": "key:a", "prompt_tokens": 2, "completion_tokens": 3, "latency_ms": 4},
        {"status": 401, "source_ip": "203.0.113.9", "verdicts": {"auth": "unknown_key"}},
    )
    for q in queries:
        # Then each parses, and runs over audit records without an error
        assert parse_query(q.query_string), q.name
        run_query(q.query_string, [dict(r) for r in records])


def test_json_messages_are_flattened_and_filters_skip_absent_fields() -> None:
    records = _events(
        {"status": 200, "principal": "key:a", "verdicts": {"auth": "ok"}},
        {"status": 401, "verdicts": {"auth": "expired"}},
        extra=["START RequestId: 1 Version: $LATEST"],
    )
    assert records[0]["audit.verdicts.auth"] == "ok" and "audit.principal" not in records[1]
    # A comparison with an absent field is false; `not` of it is true
    assert len(_rows('filter audit.principal = "key:a" | fields @logStream', records)) == 1
    assert len(_rows('filter not audit.principal = "key:a"', records)) == 2
    assert _rows("filter ispresent(audit.status) and audit.status >= 400 | fields audit.status", records) == [
        {"audit.status": "401"}
    ]
    assert len(_rows('filter @message like "RequestId" or audit.status < 300', records)) == 2
    assert len(_rows('filter @message like /"auth":"(ok|expired)"/', records)) == 2
    assert len(_rows("filter @message not like /audit/ and @message =~ /^START/", records)) == 1


def test_stats_groups_by_fields_absent_ones_included_and_aggregates_over_them() -> None:
    records = _events(
        {"status": 200, "principal": "key:a", "cost_micro_usd": 1_500_000, "latency_ms": 10},
        {"status": 200, "principal": "key:a", "cost_micro_usd": 500_000, "latency_ms": 30},
        {"status": 200, "principal": "key:b", "latency_ms": 20},
        {"status": 401},
    )
    rows = _rows(
        "stats count(*) as n, sum(audit.cost_micro_usd) / 1000000 as usd, count(audit.cost_micro_usd) as priced "
        "by audit.principal | sort n desc",
        records,
    )
    # Then each principal is a group, the records without one a group whose row has no principal field, and a sum
    # over nothing is absent rather than 0
    assert rows[0] == {"audit.principal": "key:a", "n": "2", "usd": "2", "priced": "2"}
    assert {"audit.principal": "key:b", "n": "1", "priced": "0"} in rows
    assert {"n": "1", "priced": "0"} in rows
    # Percentiles are nearest-rank; count_distinct counts distinct values; min/max/avg skip absent values
    latency = _rows(
        "stats pct(audit.latency_ms, 50) as p50, pct(audit.latency_ms, 99) as p99, min(audit.latency_ms), "
        "max(audit.latency_ms) as hi, avg(audit.latency_ms) as mean, count_distinct(audit.status) as codes",
        records,
    )
    assert latency == [
        {"p50": "20", "p99": "30", "min(audit.latency_ms)": "10", "hi": "30", "mean": "20", "codes": "2"}
    ]


def test_fields_arithmetic_parse_sort_and_limit() -> None:
    records = _events(
        {"status": 200, "prompt_tokens": 2, "completion_tokens": 3, "verdicts": {"guardrail:pii:email": "redact"}},
        {"status": 200, "prompt_tokens": 7, "completion_tokens": 1, "verdicts": {"schema": "ok"}},
        {"status": 200, "prompt_tokens": 1},
    )
    tokens = _rows(
        "fields audit.prompt_tokens + audit.completion_tokens as tokens | sort tokens desc | limit 2", records
    )
    # An absent operand makes the sum absent (the third record has no completion_tokens), and sorts last
    assert tokens == [{"tokens": "8"}, {"tokens": "5"}]
    assert _rows("fields coalesce(audit.completion_tokens, audit.prompt_tokens) as c | sort c asc", records)[0] == {
        "c": "1"
    }
    verdicts = _rows('parse @message /"verdicts":(?<v>\\{[^{}]*\\})/ | stats count(*) as n by v', records)
    assert {"v": '{"guardrail:pii:email":"redact"}', "n": "1"} in verdicts and {"n": "1"} in verdicts


@pytest.mark.parametrize(
    "query",
    [
        "display @message",  # a command outside the subset
        "stats count(*) by bin(5m)",  # grouping by a function
        "sort a desc, b asc",  # more than one sort key
        'parse @message "* [*]" as a, b',  # the glob form of parse
        "filter strlen(@message) > 3",  # a function outside the subset
        "filter @message like /x/i",  # regex flags
        "fields sum(audit.tokens)",  # an aggregate outside stats
        "stats audit.status by audit.code",  # a stats item without an aggregate
        "stats count(*) as n | limit 0",
        'filter message = "audit',  # unterminated string
        "filter a = 1 | | limit 3",
    ],
)
def test_syntax_outside_the_subset_is_refused(query: str) -> None:
    with pytest.raises(QuerySyntaxError):
        parse_query(query)
