"""`bulwark report --stack NAME`: the report of a deployed stack, aggregated in CloudWatch Logs Insights.

The template saves one Logs Insights query per figure (`AWS::Logs::QueryDefinition`, named `<stack>/report/...`).
They are found by name (DescribeQueryDefinitions: each carries its query and log groups, so no CloudFormation call
is needed), started together over the window (StartQuery) and polled until done (GetQueryResults). Each one ends in
`stats ... by ...`, so what comes back is a few rows per principal, code or source, never the records themselves;
`bulwark_dev.audit_report` turns the rows into the same report the local log gives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

from bulwark_dev.audit_report import Latency, RefusalGroup, RequestGroup, Tallies, guardrail_hits

# What the report needs, by the name after "<stack>/report/".
REPORT_QUERIES: Final = ("requests", "refusals", "failure-sources", "guardrail-verdicts", "latency")
IAM_ACTIONS: Final = ("logs:DescribeQueryDefinitions", "logs:StartQuery", "logs:GetQueryResults")
FIRST_POLL_SECONDS, LAST_POLL_SECONDS, STILL_RUNNING_NOTE_SECONDS = 0.25, 4.0, 10.0
INSIGHTS_ROW_CAP: Final = 10_000  # Logs Insights returns at most this many rows, whatever the query's limit
_DONE: Final = frozenset({"Complete", "Failed", "Cancelled", "Timeout", "Unknown"})
_ACCESS_DENIED: Final = frozenset({"AccessDeniedException", "AccessDenied"})
_BAD_CREDENTIALS: Final = frozenset(
    {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException", "ExpiredToken"}
)


class ReportUnavailable(RuntimeError):
    """The stack's report cannot be made; the message says why and what to do next."""


@dataclass(frozen=True)
class SavedQuery:
    name: str
    query_string: str
    log_groups: tuple[str, ...]


Rows = list[dict[str, str]]


# ----------------------------------------------------------------------------------------------------------- entry
def stack_tallies(
    stack: str,
    *,
    since_seconds: int,
    region: str | None,
    endpoint_url: str | None = None,
    timeout_seconds: float = 300.0,
    progress: TextIO | None = None,
) -> tuple[Tallies, list[str]]:
    """The stack's tallies over the last `since_seconds`, and the log groups they were read from."""
    client = _client(region, endpoint_url)
    where = f"region {client.meta.region_name}"
    queries = report_queries(client, stack, where)
    groups = sorted({g for q in queries.values() for g in q.log_groups})
    end = int(time.time())
    _say(
        progress,
        f"Running {len(queries)} saved Logs Insights queries of stack {stack} ({where}) over the last "
        f"{_span(since_seconds)}: {', '.join(groups)}",
    )
    rows = run_queries(
        client,
        queries,
        start=end - since_seconds,
        end=end,
        timeout_seconds=timeout_seconds,
        progress=progress,
    )
    return tallies_from_rows(rows), groups


def _client(region: str | None, endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    try:
        # A session of its own: credentials are looked up now, not reused from an earlier client in this process.
        return boto3.session.Session().client(
            "logs", region_name=region, endpoint_url=endpoint_url, config=Config(retries={"mode": "standard"})
        )
    except NoRegionError:
        raise ReportUnavailable("No AWS region: pass --region (or set AWS_REGION).") from None


# ------------------------------------------------------------------------------------------------------- discovery
def report_queries(client: Any, stack: str, where: str = "this region") -> dict[str, SavedQuery]:
    """The stack's report queries by short name, found by the "<stack>/" name prefix."""
    prefix = f"{stack}/"
    found: dict[str, SavedQuery] = {}
    kwargs: dict[str, Any] = {"queryDefinitionNamePrefix": prefix, "maxResults": 1000}
    while True:
        page = _call(client.describe_query_definitions, "logs:DescribeQueryDefinitions", **kwargs)
        for d in page.get("queryDefinitions", []):
            name = str(d.get("name", ""))
            if name.startswith(prefix):  # the prefix match is the service's; checked again, it costs nothing
                found[name[len(prefix) :]] = SavedQuery(
                    name, str(d.get("queryString", "")), tuple(str(g) for g in d.get("logGroupNames") or ())
                )
        token = page.get("nextToken")
        if not token:
            break
        kwargs["nextToken"] = token
    if not found:
        raise ReportUnavailable(
            f"No saved Logs Insights queries named '{prefix}...' in {where}. Is '{stack}' the stack's name, and is "
            "it deployed in this region? (pass --region, or check with `aws cloudformation describe-stacks`)"
        )
    wanted = {f"report/{short}" for short in REPORT_QUERIES}
    missing = sorted(wanted - set(found))
    if missing:
        raise ReportUnavailable(
            f"Stack '{stack}' has saved queries but not the report's ({', '.join(prefix + m for m in missing)}): "
            "its template predates `bulwark report --stack`. Deploy the current template.yaml (`sam deploy`)."
        )
    empty = sorted(short for short in wanted if not found[short].log_groups)
    if empty:
        raise ReportUnavailable(f"Saved queries {', '.join(prefix + e for e in empty)} name no log groups.")
    return {short: found[f"report/{short}"] for short in REPORT_QUERIES}


# ------------------------------------------------------------------------------------------------------------- run
def run_queries(
    client: Any,
    queries: Mapping[str, SavedQuery],
    *,
    start: int,
    end: int,
    timeout_seconds: float,
    progress: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Rows]:
    """Start every query over [start, end] (epoch seconds), then poll until all are done or the wait runs out."""
    started: dict[str, str] = {}
    try:
        for short, q in queries.items():
            reply = _call(
                client.start_query,
                "logs:StartQuery",
                logGroupNames=list(q.log_groups),
                startTime=start,
                endTime=end,
                queryString=q.query_string,
                limit=INSIGHTS_ROW_CAP,
                context=q.name,
            )
            started[short] = str(reply["queryId"])
        results = _poll(client, queries, started, timeout_seconds, progress, clock, sleep)
    except BaseException:
        _stop(client, started)  # a query left running keeps scanning, and billing, for up to an hour
        raise
    return results


def _poll(
    client: Any,
    queries: Mapping[str, SavedQuery],
    started: dict[str, str],
    timeout_seconds: float,
    progress: TextIO | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Rows]:
    began = clock()
    deadline, noted = began + timeout_seconds, began
    wait = FIRST_POLL_SECONDS
    results: dict[str, Rows] = {}
    scanned = 0.0
    pending = dict(started)
    while pending:
        for short, query_id in list(pending.items()):
            page = _call(client.get_query_results, "logs:GetQueryResults", queryId=query_id)
            status = str(page.get("status", "Unknown"))
            if status not in _DONE:
                continue
            name = queries[short].name
            if status != "Complete":
                del pending[short]
                raise ReportUnavailable(
                    f"Logs Insights query {name} ended {status}. Try again; if it keeps failing, run it in the "
                    "CloudWatch console (Logs Insights, Saved queries) to see why, or use a shorter --since."
                )
            del pending[short]
            stats = page.get("statistics") or {}
            scanned += float(stats.get("bytesScanned") or 0)
            rows = [{str(c["field"]): str(c.get("value", "")) for c in row} for row in page.get("results", [])]
            if len(rows) >= INSIGHTS_ROW_CAP:
                _say(progress, f"  warning: {name} hit Logs Insights' {INSIGHTS_ROW_CAP} row cap; its figures are low")
            results[short] = rows
            _say(
                progress,
                f"  {name}: {len(rows)} rows from {int(stats.get('recordsMatched') or 0)} records "
                f"({_megabytes(float(stats.get('bytesScanned') or 0))} scanned)",
            )
        if not pending:
            break
        if clock() - noted >= STILL_RUNNING_NOTE_SECONDS:
            noted = clock()
            _say(progress, f"  still running after {noted - began:.0f} s: {', '.join(sorted(pending))}")
        if clock() >= deadline:
            raise ReportUnavailable(
                f"The Logs Insights queries did not finish within {timeout_seconds:g} s ({', '.join(sorted(pending))} "
                "still running; stopped). Use a shorter --since, or a longer --timeout."
            )
        sleep(min(wait, max(deadline - clock(), 0.0)))
        wait = min(wait * 2, LAST_POLL_SECONDS)  # small windows finish in about a second; big ones take minutes
    _say(progress, f"Scanned {_megabytes(scanned)} in all (Logs Insights bills by data scanned).")
    return results


def _stop(client: Any, started: Mapping[str, str]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    for query_id in started.values():
        try:
            client.stop_query(queryId=query_id)
        except (BotoCoreError, ClientError):
            pass  # already done, or logs:StopQuery not granted: the query then ends on its own


def _call(method: Callable[..., Any], action: str, *, context: str = "", **kwargs: Any) -> Any:
    """One CloudWatch Logs call, its failures turned into what to do next."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        return method(**kwargs)
    except (NoCredentialsError, PartialCredentialsError):
        raise ReportUnavailable(
            "No AWS credentials found. Sign in (e.g. `aws sso login`, or set AWS_PROFILE or the AWS_ACCESS_KEY_ID "
            "variables) and try again."
        ) from None
    except EndpointConnectionError as exc:
        raise ReportUnavailable(f"Cannot reach CloudWatch Logs ({exc}). Check --region and your network.") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in _ACCESS_DENIED:
            raise ReportUnavailable(
                f"Access denied to {action}: {message} Your identity needs {', '.join(IAM_ACTIONS)} "
                "(StartQuery on the stack's log groups)."
            ) from None
        if code in _BAD_CREDENTIALS:
            raise ReportUnavailable(f"AWS rejected your credentials ({code}: {message}). Sign in again.") from None
        if code == "LimitExceededException":
            raise ReportUnavailable(
                f"Too many Logs Insights queries are running in this account ({message}). Try again in a minute."
            ) from None
        if code == "MalformedQueryException":
            raise ReportUnavailable(
                f"Saved query {context} is not valid Logs Insights ({message}). Deploy the current template.yaml."
            ) from None
        if code == "ResourceNotFoundException":
            raise ReportUnavailable(
                f"{action} {context}: {message} (a log group the saved query names does not exist; deploy the "
                "current template.yaml)"
            ) from None
        raise ReportUnavailable(f"{action} failed: {code}: {message}") from None
    except BotoCoreError as exc:
        raise ReportUnavailable(f"{action} failed: {exc}") from None


# ------------------------------------------------------------------------------------------------------------ rows
def tallies_from_rows(rows: Mapping[str, Rows]) -> Tallies:
    """Insights rows (every value a string; a field the group lacks is absent) as the report's tallies."""
    latency = rows["latency"][0] if rows["latency"] else {}
    return Tallies(
        requests=[
            RequestGroup(
                principal=r.get("audit.principal"),
                tenant=r.get("audit.tenant"),
                status=_int(r, "audit.status"),
                requests=_int(r, "requests"),
                prompt_tokens=_int(r, "prompt_tokens"),
                completion_tokens=_int(r, "completion_tokens"),
                spend_micro_usd=_int(r, "spend_micro_usd"),
            )
            for r in rows["requests"]
        ],
        refusals=[
            RefusalGroup(
                status=_int(r, "audit.status"),
                code=r.get("audit.code", ""),
                auth=r.get("audit.verdicts.auth"),
                limits=r.get("audit.verdicts.limits"),
                count=_int(r, "refusals"),
            )
            for r in rows["refusals"]
        ],
        failure_sources=_sources(rows["failure-sources"]),
        guardrail_hits=guardrail_hits(
            (verdicts, _int(r, "requests")) for r in rows["guardrail-verdicts"] if (verdicts := _object(r, "verdicts"))
        ),
        latency=Latency(
            count=_int(latency, "timed"),
            p50=_float(latency, "p50"),
            p99=_float(latency, "p99"),
            max=_float(latency, "max_ms"),
        ),
    )


def _sources(rows: Rows) -> dict[str, int]:
    sources: dict[str, int] = {}
    for r in rows:
        ip = r.get("audit.source_ip") or "-"  # absent and "" are both "unknown", as in the local report
        sources[ip] = sources.get(ip, 0) + _int(r, "failures")
    return sources


def _float(row: Mapping[str, str], field: str) -> float:
    value = row.get(field)
    return float(value) if value else 0.0


def _int(row: Mapping[str, str], field: str) -> int:
    # Sums of integers come back as "12" or "12.0": exact either way below 2**53.
    return round(_float(row, field))


def _object(row: Mapping[str, str], field: str) -> dict[str, Any] | None:
    try:
        value = json.loads(row.get(field) or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------------------------------------- helpers
def _say(progress: TextIO | None, line: str) -> None:
    if progress is not None:
        progress.write(line + "\n")
        progress.flush()


def _megabytes(n: float) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
