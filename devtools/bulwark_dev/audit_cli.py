"""`bulwark audit verify` and `bulwark report`: check the audit chain, and summarize what a session's records show.

Both read the audit records the functions write (see `bulwark.observability.audit`): from a local log
(`.bulwark/logs/*.jsonl`, written by `bulwark local`) or, for `audit verify --log-group`, from CloudWatch Logs with
the caller's own credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from bulwark.limits.spend import micros_to_usd
from bulwark.observability.audit import Issue, VerifyResult, audit_of, audit_records, verify

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
        help="summarize a session's audit records: requests, refusals, failure sources, throttles, tokens, latency",
    )
    r.add_argument(
        "path", nargs="?", help="a JSONL log file or a directory of them (default: the latest local session)"
    )
    r.add_argument("--since", help="only records newer than this (e.g. 1h, 30m)")
    r.add_argument("--top", type=int, default=10, help="rows per ranking (default 10)")
    r.set_defaults(func=cmd_report)


# ------------------------------------------------------------------------------------------------------------ input
def _since_ms(text: str | None) -> int | None:
    if not text:
        return None
    from bulwark.auth.key_admin import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise AuditCliError(str(exc)) from None
    return int((time.time() - seconds) * 1000)


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
UNAUTHENTICATED = "(unauthenticated)"


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))  # nearest rank
    return float(sorted_values[int(rank) - 1])


def summarize(records: Iterable[dict[str, Any]], *, top: int = 10) -> dict[str, Any]:
    """What the alarms would see, from audit records: one record per request."""
    total = 0
    status: Counter[str] = Counter()
    refusals: Counter[tuple[int, str]] = Counter()
    auth_reasons: Counter[str] = Counter()
    failure_sources: Counter[str] = Counter()
    throttles: Counter[str] = Counter()
    guardrails: Counter[str] = Counter()
    per_principal: dict[str, dict[str, int]] = {}
    per_tenant: dict[str, dict[str, int]] = {}
    latencies: list[float] = []
    for r in records:
        total += 1
        code = str(r.get("code") or "")
        st = int(r.get("status") or 0)
        principal = str(r.get("principal") or UNAUTHENTICATED)
        verdicts = r.get("verdicts") if isinstance(r.get("verdicts"), dict) else {}
        assert isinstance(verdicts, dict)
        status[str(st)] += 1
        p = per_principal.setdefault(principal, {"requests": 0, "ok": 0, "refused": 0, "tokens": 0})
        p["requests"] += 1
        tokens = int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0)
        p["tokens"] += tokens
        cost = int(r.get("cost_micro_usd") or 0)
        p["spend_micro_usd"] = p.get("spend_micro_usd", 0) + cost
        t = per_tenant.setdefault(
            str(r.get("tenant") or "-"), {"requests": 0, "refused": 0, "tokens": 0, "spend_micro_usd": 0}
        )
        t["requests"] += 1
        t["tokens"] += tokens
        t["spend_micro_usd"] += cost
        if 200 <= st < 300:
            p["ok"] += 1
        if st >= 400:
            t["refused"] += 1
            p["refused"] += 1
            refusals[(st, code)] += 1
            failure_sources[str(r.get("source_ip") or "-")] += 1
        if st == 401 and "auth" in verdicts:
            auth_reasons[str(verdicts["auth"])] += 1
        if st == 429:
            throttles[code or str(verdicts.get("limits", "-"))] += 1
        for k in verdicts:
            if k.startswith(("guardrail:", "output:")):
                guardrails[k.partition(":")[2]] += 1
        lat = r.get("latency_ms")
        if isinstance(lat, int | float) and lat > 0:
            latencies.append(float(lat))
    latencies.sort()
    return {
        "requests": total,
        "status": dict(sorted(status.items())),
        "principals": [
            {"principal": name, **v}
            for name, v in sorted(per_principal.items(), key=lambda kv: (-kv[1]["requests"], kv[0]))
        ],
        "refusals": [
            {"status": st, "code": code, "count": n}
            for (st, code), n in sorted(refusals.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "auth_failures_by_reason": dict(sorted(auth_reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "top_failure_sources": [{"source_ip": ip, "count": n} for ip, n in _top(failure_sources, top)],
        "throttles_by_limit": dict(sorted(throttles.items())),
        "guardrail_hits": dict(sorted(guardrails.items())),
        "tenants": [
            {"tenant": name, **v, "spend_usd": micros_to_usd(v["spend_micro_usd"])}
            for name, v in sorted(per_tenant.items(), key=lambda kv: (-kv[1]["spend_micro_usd"], kv[0]))
        ],
        "tokens_by_principal": {
            name: v["tokens"]
            for name, v in sorted(per_principal.items(), key=lambda kv: -kv[1]["tokens"])
            if v["tokens"]
        },
        "latency_ms": {
            "count": len(latencies),
            "p50": _percentile(latencies, 50),
            "p99": _percentile(latencies, 99),
            "max": latencies[-1] if latencies else 0.0,
        },
    }


def _top(counter: Counter[str], n: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[: max(n, 0)]


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    files = _log_files(args.path)
    records = _filter_since(audit_records(_read_lines(files)), _since_ms(args.since))
    summary = summarize(records, top=args.top)
    summary["source"] = [str(f) for f in files]
    if getattr(args, "json", False):
        out.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    else:
        out.write(_human_report(summary, top=args.top))
    return EXIT_OK


def _table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    if not rows:
        return [title, "  (none)", ""]
    cells = [tuple(str(c) for c in header), *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title]
    for row in cells:
        lines.append(
            "  "
            + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    lines.append("")
    return lines


def _human_report(s: dict[str, Any], *, top: int) -> str:
    lat = s["latency_ms"]
    lines = [
        f"{s['requests']} requests  ({', '.join(f'{k}: {v}' for k, v in s['status'].items()) or 'none'})",
        f"latency  p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms  ({lat['count']} timed)",
        "",
    ]
    lines += _table(
        "Requests per key / principal",
        ("PRINCIPAL", "REQUESTS", "OK", "REFUSED", "TOKENS"),
        [(p["principal"], p["requests"], p["ok"], p["refused"], p["tokens"]) for p in s["principals"][:top]],
    )
    lines += _table(
        "By tenant",
        ("TENANT", "REQUESTS", "REFUSED", "TOKENS", "SPEND USD"),
        [(t["tenant"], t["requests"], t["refused"], t["tokens"], t["spend_usd"]) for t in s["tenants"][:top]],
    )
    lines += _table(
        "Refusals by reason",
        ("STATUS CODE", "COUNT"),
        [(f"{r['status']} {r['code']}", r["count"]) for r in s["refusals"]],
    )
    lines += _table(
        "Authentication failures by reason", ("REASON", "COUNT"), list(s["auth_failures_by_reason"].items())
    )
    lines += _table(
        "Top sources of failures",
        ("SOURCE IP", "FAILURES"),
        [(r["source_ip"], r["count"]) for r in s["top_failure_sources"]],
    )
    lines += _table("Throttles by limit", ("LIMIT", "COUNT"), list(s["throttles_by_limit"].items()))
    lines += _table("Guardrail hits", ("KIND", "COUNT"), list(s["guardrail_hits"].items()))
    lines += _table("Tokens per key / principal", ("PRINCIPAL", "TOKENS"), list(s["tokens_by_principal"].items())[:top])
    return "\n".join(lines).rstrip("\n") + "\n"
