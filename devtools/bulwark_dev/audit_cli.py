"""`bulwark audit verify` and `bulwark report`: check the audit chain, and summarize what a session's records show.

Both read the audit records the functions write (see `bulwark.observability.audit`): from a local log
(`.bulwark/logs/*.jsonl`, written by `bulwark local`) or from CloudWatch Logs with the caller's own credentials
(`audit verify --log-group` reads the records; `report --stack` has Logs Insights aggregate them, see
`bulwark_dev.insights_report`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from bulwark.observability.audit import Issue, VerifyResult, audit_of, audit_records, verify

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_STACK_WINDOW = "24h"  # Logs Insights bills by data scanned: a deployed stack's report always has a window


class AuditCliError(ValueError):
    """A usage problem (missing file, bad duration): `bulwark` prints it and exits 2."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="the hash-chained audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    v = audit.add_parser(
        "verify",
        parents=[common],
        help="check audit chains in a local log (file or directory) or in CloudWatch Logs",
        description="Exit status 0 when every chain is intact, 1 when a record was deleted, edited, inserted or "
        "moved (each issue names its chain and seq).",
    )
    v.add_argument(
        "path", nargs="?", help="a JSONL log file or a directory of them (default: the latest local session)"
    )
    v.add_argument(
        "--log-group", action="append", dest="log_groups", metavar="NAME", help="CloudWatch log group (repeatable)"
    )
    v.add_argument("--since", help="only records newer than this (e.g. 1h, 30m, 7d); chains may then start mid-way")
    v.add_argument("--region", help="AWS region for --log-group")
    v.add_argument("--endpoint-url", help=argparse.SUPPRESS)
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser(
        "report",
        parents=[common],
        help="summarize audit records: requests, refusals, failure sources, throttles, guardrails, tokens, spend",
        description="From a local log, or with --stack from a deployed stack's CloudWatch Logs (its saved Logs "
        "Insights queries aggregate in AWS; needs logs:DescribeQueryDefinitions, logs:StartQuery, "
        "logs:GetQueryResults). Both print the same report; --json prints it as data.",
    )
    r.add_argument(
        "path", nargs="?", help="a JSONL log file or a directory of them (default: the latest local session)"
    )
    r.add_argument("--stack", help="a deployed stack's name: report from its CloudWatch Logs")
    r.add_argument("--region", help="AWS region of --stack (default: your AWS configuration's)")
    r.add_argument(
        "--since", help=f"only records newer than this (e.g. 1h, 30m, 7d; with --stack default {DEFAULT_STACK_WINDOW})"
    )
    r.add_argument(
        "--timeout", type=float, default=300.0, help="with --stack: seconds to wait for the queries (default 300)"
    )
    r.add_argument("--top", type=int, default=10, help="rows per ranking (default 10)")
    r.add_argument("--endpoint-url", help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_report)


# ------------------------------------------------------------------------------------------------------------ input
def _duration(text: str) -> int:
    from bulwark.auth.key_admin import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise AuditCliError(str(exc)) from None


def _since_ms(text: str | None) -> int | None:
    if not text:
        return None
    return int((time.time() - _duration(text)) * 1000)


def _default_log_path() -> Path:
    for d in (Path.cwd(), *Path.cwd().parents):
        logs = d / ".bulwark" / "logs"
        if logs.is_dir():
            files = sorted(logs.glob("*.jsonl"))
            if files:
                return files[-1]
    raise AuditCliError("No local session log found (.bulwark/logs/*.jsonl). Run `bulwark local`, or pass a PATH.")


def _log_files(path: str | None) -> list[Path]:
    if path is None:
        return [_default_log_path()]
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise AuditCliError(f"{p} holds no .jsonl log files.")
        return files
    if not p.is_file():
        raise AuditCliError(f"{p}: no such file or directory.")
    return [p]


def _read_lines(files: list[Path]) -> Iterator[str]:
    for f in files:
        with f.open(encoding="utf-8", errors="replace") as fh:
            yield from fh


def _filter_since(records: Iterable[dict[str, Any]], since: int | None) -> list[dict[str, Any]]:
    if since is None:
        return list(records)
    return [r for r in records if isinstance(r.get("ts"), int | float) and r["ts"] >= since]


AUDIT_PATTERN = '{ $.message = "audit" }'
REPORT_PATTERN = '"REPORT RequestId"'


def _filter_events(client: Any, group: str, pattern: str, since_ms: int | None) -> Iterator[dict[str, Any]]:
    """Every event of `group` matching `pattern` (FilterLogEvents, every page)."""
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs: dict[str, Any] = {"logGroupName": group, "filterPattern": pattern}
    if since_ms is not None:
        kwargs["startTime"] = since_ms
    try:
        while True:
            page = client.filter_log_events(**kwargs)
            yield from page.get("events", [])
            token = page.get("nextToken")
            if not token or token == kwargs.get("nextToken"):
                return
            kwargs["nextToken"] = token
    except (BotoCoreError, ClientError) as exc:
        raise AuditCliError(
            f"Cannot read log group '{group}': {exc}. Check the name, region and your AWS credentials."
        ) from None


def _logs_client(region: str | None, endpoint_url: str | None) -> Any:
    import boto3

    return boto3.client("logs", region_name=region, endpoint_url=endpoint_url)


def cloudwatch_entries(
    log_groups: list[str],
    *,
    since_ms: int | None,
    region: str | None = None,
    endpoint_url: str | None = None,
    reports: bool = True,
) -> list[dict[str, Any]]:
    """The audit lines and (with `reports`) the runtime's REPORT lines, each with its log stream, in event-time order:
    what `check_streams` needs to account for every invocation of every environment."""
    from bulwark_dev.local.stack import platform_record

    client = _logs_client(region, endpoint_url)
    found: list[tuple[int, int, int, dict[str, Any]]] = []
    for group in log_groups:
        for event in _filter_events(client, group, AUDIT_PATTERN, since_ms):
            try:
                entry = json.loads(event.get("message", ""))
            except ValueError:
                continue
            rec = audit_of(entry)
            if rec is None:
                continue
            seq = rec.get("seq")
            entry["log_stream"] = event.get("logStreamName", "")
            found.append((int(event.get("timestamp", 0)), 0, seq if isinstance(seq, int) else 0, entry))
        if not reports:
            continue
        for event in _filter_events(client, group, REPORT_PATTERN, since_ms):
            record = platform_record(str(event.get("message", "")).rstrip("\n"))
            if record is None or record.get("platform") != "REPORT":
                continue
            record["log_stream"] = event.get("logStreamName", "")
            found.append((int(event.get("timestamp", 0)), 1, 0, record))
    # Event time, then an invocation's record before its REPORT, then seq: one container's records that share a
    # millisecond stay in the order they were written.
    found.sort(key=lambda t: (t[0], t[1], t[2]))
    return [entry for _, _, _, entry in found]


# ----------------------------------------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    since = _since_ms(args.since)
    if args.log_groups:
        if args.path:
            raise AuditCliError("Give either a PATH or --log-group, not both.")
        endpoint = args.endpoint_url or os.environ.get("BULWARK_LOGS_ENDPOINT_URL")
        entries = cloudwatch_entries(
            args.log_groups, since_ms=since, region=args.region, endpoint_url=endpoint, reports=since is None
        )
        records = [rec for e in entries if (rec := audit_of(e)) is not None]
        source = ", ".join(args.log_groups)
        # Retention and time windows cut chains at the front: only what is present is checked.
        result = verify(records, require_genesis=False)
        endings: dict[str, dict[str, Any]] = {}
        if since is None:
            issues, endings = check_streams(entries)
            result.issues.extend(issues)
    else:
        files = _log_files(args.path)
        entries = list(_entries(_read_lines(files)))
        records = _filter_since((r for e in entries if (r := audit_of(e)) is not None), since)
        source = ", ".join(str(f) for f in files)
        result = verify(records, require_genesis=since is None)
        endings = {}
        if since is None:  # a time window cuts invocations and records alike: the stream check needs whole streams
            issues, endings = check_streams(entries)
            result.issues.extend(issues)
    _print_verify(args, result, source, out, endings)
    return EXIT_OK if result.ok and result.records else EXIT_FAILED


def _entries(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short (an environment killed mid-write) is not a record
        if isinstance(entry, dict):
            yield entry


def check_streams(entries: Iterable[dict[str, Any]]) -> tuple[list[Issue], dict[str, dict[str, Any]]]:
    """What the chain alone cannot tell: whether records are missing after a chain's last one.

    Each execution environment keeps its own chain and writes to its own log stream, where the runtime's REPORT line
    closes every invocation. For a writer that audits every invocation (records marked ``every_invocation``), an
    invocation in the chain's stream with no record is a deleted (or lost) record, wherever it falls; a chain whose
    stream has no later invocation simply ended with its environment. A timed-out invocation (REPORT ``Status:
    timeout``) may end before its record: the environment is discarded with it, so that is an ending, not a loss.
    Returns the issues and, per chain, its log stream, invocations and how it ended.
    """
    streams: dict[str, dict[str, Any]] = {}
    for entry in entries:
        stream = entry.get("log_stream")
        if not isinstance(stream, str) or not stream:
            continue
        info = streams.setdefault(stream, {"invocations": [], "audited": {}, "chain": None, "every": False})
        if entry.get("platform") == "REPORT" and isinstance(entry.get("requestId"), str):
            info["invocations"].append((entry["requestId"], entry.get("status") == "timeout"))
            continue
        record = audit_of(entry)
        if record is None:
            continue
        info["chain"] = record.get("chain")
        info["every"] = info["every"] or record.get("every_invocation") is True
        invocation = entry.get("function_request_id")
        if isinstance(invocation, str):
            info["audited"][invocation] = record.get("seq")
    issues: list[Issue] = []
    endings: dict[str, dict[str, Any]] = {}
    for stream, info in streams.items():
        chain = info["chain"]
        if chain is None:
            continue
        invocations: list[tuple[str, bool]] = info["invocations"]
        audited: dict[str, Any] = info["audited"]
        missing = [rid for rid, timed_out in invocations if not timed_out and rid not in audited]
        timed_out = sum(1 for _, flag in invocations if flag)
        ending = "timed out (environment discarded)" if invocations and invocations[-1][1] else "with its environment"
        endings[str(chain)] = {"log_stream": stream, "invocations": len(invocations), "ended": ending}
        if not info["every"]:
            continue  # a writer that audits only some invocations (the authorizer's refusals): nothing to expect
        last_seq = max((seq for seq in audited.values() if isinstance(seq, int)), default=0)
        for rid in missing:
            issues.append(
                Issue(
                    str(chain),
                    None,
                    "deleted",
                    f"invocation {rid} ran in this chain's environment ({stream}) and has no audit record "
                    f"(the chain's last record is {last_seq})",
                )
            )
        if timed_out:
            endings[str(chain)]["timed_out"] = timed_out
    return issues, endings


def _print_verify(
    args: argparse.Namespace,
    result: VerifyResult,
    source: str,
    out: TextIO,
    endings: dict[str, dict[str, Any]] | None = None,
) -> None:
    endings = endings or {}
    if getattr(args, "json", False):
        data = {"source": source, **result.as_dict(), "streams": endings}
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    lines = [f"{result.records} audit records in {len(result.chains)} chains ({source})"]
    for c in result.chains.values():
        lines.append(f"  {c.chain:<60} {c.records:>6} records  seq {c.first_seq}..{c.last_seq}")
        if c.chain in endings:
            end = endings[c.chain]
            lines.append(f"    log stream {end['log_stream']}: {end['invocations']} invocations, ended {end['ended']}")
    if not result.records:
        lines.append("FAILED: no audit records found.")
    elif result.ok:
        lines.append("OK: every chain is intact.")
    else:
        lines.append(f"FAILED: {len(result.issues)} problems")
        for i in result.issues:
            lines.append(f"  {i.kind:<11} chain {i.chain} seq {i.seq}: {i.detail}")
    out.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark_dev.audit_report import build_report, human_report, tally

    if args.stack:
        if args.path:
            raise AuditCliError("Give either a PATH (a local log) or --stack (a deployed stack), not both.")
        from bulwark_dev.insights_report import ReportUnavailable, stack_tallies

        since = args.since or DEFAULT_STACK_WINDOW
        seconds = _duration(since)
        endpoint = args.endpoint_url or os.environ.get("BULWARK_LOGS_ENDPOINT_URL")
        try:
            tallies, groups = stack_tallies(
                args.stack,
                since_seconds=seconds,
                region=args.region,
                endpoint_url=endpoint,
                timeout_seconds=args.timeout,
                progress=sys.stderr,
            )
        except ReportUnavailable as exc:
            sys.stderr.write(f"bulwark: {exc}\n")
            return EXIT_FAILED
        report = build_report(tallies, top=args.top, source=groups)
    else:
        files = _log_files(args.path)
        records = _filter_since(audit_records(_read_lines(files)), _since_ms(args.since))
        report = build_report(tally(records), top=args.top, source=[str(f) for f in files])
    if getattr(args, "json", False):
        out.write(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    else:
        out.write(human_report(report, top=args.top))
    return EXIT_OK
