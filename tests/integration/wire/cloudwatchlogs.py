"""CloudWatch Logs JSON 1.1: `POST /` with `X-Amz-Target: Logs_20140328.<Action>`.

FilterLogEvents, for `bulwark audit verify --log-group`: time window (startTime/endTime), the JSON equality filter
pattern (`{ $.field = "value" }`), `limit` and `nextToken`, and ResourceNotFoundException for an unknown group.

Logs Insights, for `bulwark report --stack`: DescribeQueryDefinitions (name prefix, paged), StartQuery (log groups,
startTime/endTime in epoch seconds, `limit`; MalformedQueryException for a query outside what `insights_query`
runs), GetQueryResults (Scheduled, then Running, then Complete, as a real query is polled) and StopQuery. The saved
queries come from template.yaml itself (`saved_queries_from_template`). Knobs for the failure paths: `denied`
(actions answered AccessDeniedException), `query_outcome` (a status other than Complete) and `polls_to_finish`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_dev.local.template_model import load_template
from tests.integration.wire.insights_query import QuerySyntaxError, event_record, run_query
from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4

_JSON_EQ = re.compile(r'^\{\s*\$\.([A-Za-z0-9_.]+)\s*=\s*"([^"]*)"\s*\}$')
_CT = {"Content-Type": "application/x-amz-json-1.1"}


@dataclass
class InsightsQuery:
    """One started query: its answer is computed at StartQuery, shown once it has been polled enough."""

    result: dict[str, Any]
    polls_left: int
    status: str = "Scheduled"


@dataclass
class LogStore:
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 50
    lock: threading.Lock = field(default_factory=threading.Lock)
    query_definitions: list[dict[str, Any]] = field(default_factory=list)
    queries: dict[str, InsightsQuery] = field(default_factory=dict)
    started: list[dict[str, Any]] = field(default_factory=list)  # every StartQuery body, for assertions
    stopped: list[str] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)  # actions answered with AccessDeniedException
    query_outcome: str = "Complete"  # or Failed / Cancelled / Timeout: how every started query ends
    polls_to_finish: int = 2  # GetQueryResults calls that see Scheduled/Running before the outcome

    def put(self, group: str, stream: str, timestamp_ms: int, message: str) -> None:
        with self.lock:
            events = self.groups.setdefault(group, [])
            events.append(
                {
                    "logStreamName": stream,
                    "timestamp": timestamp_ms,
                    "message": message,
                    "ingestionTime": timestamp_ms + 5,
                    "eventId": f"{len(events):056d}",
                }
            )


def _matches(pattern: str | None, message: str) -> bool:
    if not pattern:
        return True
    m = _JSON_EQ.match(pattern.strip())
    if m is None:
        return pattern.strip('"') in message
    try:
        value: Any = json.loads(message)
    except ValueError:
        return False
    for part in m.group(1).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return isinstance(value, str) and value == m.group(2)


def saved_queries_from_template(template: Path, stack_name: str) -> list[dict[str, Any]]:
    """The template's AWS::Logs::QueryDefinition resources as DescribeQueryDefinitions lists them once deployed."""
    model = load_template(template, stack_name=stack_name)
    return [
        {
            "queryDefinitionId": str(uuid.uuid5(uuid.NAMESPACE_URL, q.name)),
            "name": q.name,
            "queryString": q.query_string,
            "logGroupNames": list(q.log_group_names),
            "lastModified": 0,
        }
        for q in model.query_definitions
    ]


def _error(kind: str, message: str) -> Reply:
    return Reply.json({"__type": kind, "message": message}, 400, _CT)


def make(store: LogStore) -> WireServer:
    def responder(request: Request) -> Reply:
        if not has_sigv4(request):
            return _error("UnrecognizedClientException", "no signature")
        action = request.headers.get("x-amz-target", "").removeprefix("Logs_20140328.")
        handler = _ACTIONS.get(action)
        if handler is None:
            return _error("UnknownOperationException", action)
        if action in store.denied:
            return _error(
                "AccessDeniedException",
                f"User: arn:aws:iam::000000000000:user/test is not authorized to perform: logs:{action}",
            )
        return handler(store, request.json())

    return WireServer(responder).start()


def _filter_log_events(store: LogStore, body: dict[str, Any]) -> Reply:
    group = body.get("logGroupName")
    with store.lock:
        if group not in store.groups:
            return _error("ResourceNotFoundException", "The specified log group does not exist.")
        events = sorted(store.groups[group], key=lambda e: e["timestamp"])
    start, end = body.get("startTime"), body.get("endTime")
    selected = [
        e
        for e in events
        if (start is None or e["timestamp"] >= start)
        and (end is None or e["timestamp"] <= end)
        and _matches(body.get("filterPattern"), e["message"])
    ]
    offset = int(body.get("nextToken") or 0)
    size = min(int(body.get("limit") or store.page_size), store.page_size)
    page = selected[offset : offset + size]
    reply: dict[str, Any] = {"events": page, "searchedLogStreams": []}
    if offset + size < len(selected):
        reply["nextToken"] = str(offset + size)
    return Reply.json(reply, 200, _CT)


def _describe_query_definitions(store: LogStore, body: dict[str, Any]) -> Reply:
    prefix = str(body.get("queryDefinitionNamePrefix") or "")
    size = int(body.get("maxResults") or 1000)
    if not 1 <= size <= 1000:
        return _error("InvalidParameterException", "maxResults must be 1..1000")
    with store.lock:
        matching = [d for d in store.query_definitions if d["name"].startswith(prefix)]
    offset = int(body.get("nextToken") or 0)
    reply: dict[str, Any] = {"queryDefinitions": matching[offset : offset + size]}
    if offset + size < len(matching):
        reply["nextToken"] = str(offset + size)
    return Reply.json(reply, 200, _CT)


def _start_query(store: LogStore, body: dict[str, Any]) -> Reply:
    groups = body.get("logGroupNames") or ([body["logGroupName"]] if body.get("logGroupName") else [])
    start, end = body.get("startTime"), body.get("endTime")
    if not groups or not isinstance(start, int) or not isinstance(end, int) or start > end:
        return _error("InvalidParameterException", "logGroupNames, startTime <= endTime (epoch seconds) required")
    limit = int(body.get("limit") or 10_000)
    if not 1 <= limit <= 10_000:
        return _error("InvalidParameterException", "limit must be 1..10000")
    with store.lock:
        store.started.append(body)
        missing = [g for g in groups if g not in store.groups]
        if missing:
            return _error("ResourceNotFoundException", f"Log group {missing[0]} does not exist")
        # The window is whole seconds, both ends included.
        records = [
            event_record(g, e)
            for g in groups
            for e in store.groups[g]
            if start * 1000 <= e["timestamp"] < (end + 1) * 1000
        ]
    try:
        result = run_query(str(body.get("queryString", "")), records, default_limit=limit)
    except QuerySyntaxError as exc:
        return _error("MalformedQueryException", str(exc))
    query_id = str(uuid.uuid4())
    answer = {
        "results": result.rows,
        "statistics": {
            "recordsMatched": float(result.records_matched),
            "recordsScanned": float(result.records_scanned),
            "bytesScanned": float(result.bytes_scanned),
        },
    }
    with store.lock:
        store.queries[query_id] = InsightsQuery(answer, store.polls_to_finish)
    return Reply.json({"queryId": query_id}, 200, _CT)


def _get_query_results(store: LogStore, body: dict[str, Any]) -> Reply:
    with store.lock:
        query = store.queries.get(str(body.get("queryId")))
        if query is None:
            return _error("ResourceNotFoundException", "No such query")
        if query.status in ("Scheduled", "Running"):
            if query.polls_left > 0:
                query.polls_left -= 1
                reply = {"status": query.status, "results": []}
                query.status = "Running"
                return Reply.json(reply, 200, _CT)
            query.status = store.query_outcome
        if query.status != "Complete":
            return Reply.json({"status": query.status, "results": []}, 200, _CT)
        return Reply.json({"status": "Complete", **query.result}, 200, _CT)


def _stop_query(store: LogStore, body: dict[str, Any]) -> Reply:
    query_id = str(body.get("queryId"))
    with store.lock:
        query = store.queries.get(query_id)
        if query is None or query.status not in ("Scheduled", "Running"):
            return _error("InvalidParameterException", "The query is not running")
        query.status = "Cancelled"
        store.stopped.append(query_id)
    return Reply.json({"success": True}, 200, _CT)


_ACTIONS = {
    "FilterLogEvents": _filter_log_events,
    "DescribeQueryDefinitions": _describe_query_definitions,
    "StartQuery": _start_query,
    "GetQueryResults": _get_query_results,
    "StopQuery": _stop_query,
}


def put_session_log(store: LogStore, log_file: Path, template: Path, stack_name: str) -> int:
    """A `bulwark local` session log (`.bulwark/logs/*.jsonl`) as CloudWatch holds it once deployed: each function's
    lines in its template log group (LoggingConfig), on their log stream, the message as the function wrote it (the
    local log's own `log_stream` key taken off). Lines of no function (the gateway's) are left out. Returns the count.
    """
    groups = {f.name: f.log_group for f in load_template(template, stack_name=stack_name).functions.values()}
    for name in groups.values():
        store.groups.setdefault(name, [])
    count, last_ms = 0, 0
    for line in log_file.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        group = groups.get(str(entry.get("function_name"))) if isinstance(entry, dict) else None
        if group is None:
            continue
        stream = str(entry.pop("log_stream", "") or "local")
        audit = entry.get("audit")
        stamp = audit.get("ts") if isinstance(audit, dict) else None
        last_ms = stamp if isinstance(stamp, int) else _powertools_ms(entry.get("timestamp")) or last_ms
        message = entry.get("message") if entry.get("type") == "platform" else None
        text = str(message) if isinstance(message, str) else json.dumps(entry, separators=(",", ":"))
        store.put(group, stream, last_ms, text)
        count += 1
    return count


def _powertools_ms(stamp: Any) -> int | None:
    """Powertools' "2026-12-02 02:58:43,214+0000" as epoch milliseconds."""
    import datetime as dt

    try:
        moment = dt.datetime.strptime(str(stamp), "%Y-%m-%d %H:%M:%S,%f%z")
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)
