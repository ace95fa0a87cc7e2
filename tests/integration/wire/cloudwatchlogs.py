"""CloudWatch Logs JSON 1.1: `POST /` with `X-Amz-Target: Logs_20140328.FilterLogEvents`, paged with nextToken.

Implements what `bulwark audit verify --log-group` uses: time window (startTime/endTime), the JSON equality filter
pattern (`{ $.field = "value" }`), `limit` and `nextToken`, and ResourceNotFoundException for an unknown group.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4

_JSON_EQ = re.compile(r'^\{\s*\$\.([A-Za-z0-9_.]+)\s*=\s*"([^"]*)"\s*\}$')
_CT = {"Content-Type": "application/x-amz-json-1.1"}


@dataclass
class LogStore:
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 50
    lock: threading.Lock = field(default_factory=threading.Lock)

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


def make(store: LogStore) -> WireServer:
    def responder(request: Request) -> Reply:
        if not has_sigv4(request):
            return Reply.json({"__type": "UnrecognizedClientException", "message": "no signature"}, 400, _CT)
        if request.headers.get("x-amz-target") != "Logs_20140328.FilterLogEvents":
            return Reply.json({"__type": "UnknownOperationException"}, 400, _CT)
        body = request.json()
        group = body.get("logGroupName")
        with store.lock:
            if group not in store.groups:
                missing = {"__type": "ResourceNotFoundException", "message": "The specified log group does not exist."}
                return Reply.json(missing, 400, _CT)
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

    return WireServer(responder).start()
