"""`bulwark report`'s data: what a window of audit records shows, the same model whichever source computed it.

Both sources aggregate first and derive the report second, with the same code: the local log is tallied here in
Python (`tally`), a deployed stack's records are tallied in CloudWatch Logs Insights by the template's saved queries
(`bulwark_dev.insights_report`). Each field of `Tallies` is what one saved query returns, grouped the same way, so
`build_report` cannot tell (and cannot treat differently) where its input came from.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bulwark.limits.spend import micros_to_usd

UNAUTHENTICATED = "(unauthenticated)"
NO_TENANT = "-"
GUARDRAIL_PREFIXES = ("guardrail:", "output:")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ----------------------------------------------------------------------------------------------------------- tallies
class RequestGroup(_Model):
    """Requests of one principal, tenant and status (saved query `report/requests`); None where the record lacks it."""

    principal: str | None
    tenant: str | None
    status: int
    requests: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend_micro_usd: int = 0


class RefusalGroup(_Model):
    """Refused requests (status >= 400) of one status, code and auth/limits verdict (`report/refusals`)."""

    status: int
    code: str
    auth: str | None
    limits: str | None
    count: int


class Latency(_Model):
    """Latency of the requests that carry one (`report/latency`). Percentiles are nearest-rank locally; Logs
    Insights' `pct` estimates them (see the README)."""

    count: int = 0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class Tallies(_Model):
    requests: list[RequestGroup]
    refusals: list[RefusalGroup]
    failure_sources: dict[str, int]  # source IP ("-" when unknown) -> refused requests (`report/failure-sources`)
    guardrail_hits: dict[str, int]  # verdict key without its prefix -> requests (`report/guardrail-verdicts`)
    latency: Latency


def guardrail_hits(verdict_groups: Iterable[tuple[Mapping[str, Any], int]]) -> dict[str, int]:
    """Hits per guardrail from (verdicts object, requests that had exactly it) groups."""
    hits: Counter[str] = Counter()
    for verdicts, count in verdict_groups:
        for key in verdicts:
            if key.startswith(GUARDRAIL_PREFIXES):
                hits[key.partition(":")[2]] += count
    return dict(hits)


def nearest_rank(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return float(sorted_values[int(rank) - 1])


def tally(records: Iterable[Mapping[str, Any]]) -> Tallies:
    """The local log's records, grouped as the saved queries group them in Logs Insights."""
    requests: dict[tuple[str | None, str | None, int], list[int]] = {}
    refusals: Counter[tuple[int, str, str | None, str | None]] = Counter()
    sources: Counter[str] = Counter()
    verdict_groups: Counter[str] = Counter()
    latencies: list[float] = []
    for r in records:
        status = int(r.get("status") or 0)
        verdicts = r.get("verdicts") if isinstance(r.get("verdicts"), dict) else {}
        assert isinstance(verdicts, dict)
        group = requests.setdefault((_text(r.get("principal")), _text(r.get("tenant")), status), [0, 0, 0, 0])
        group[0] += 1
        group[1] += int(r.get("prompt_tokens") or 0)
        group[2] += int(r.get("completion_tokens") or 0)
        group[3] += int(r.get("cost_micro_usd") or 0)
        if status >= 400:
            auth, limits = verdicts.get("auth"), verdicts.get("limits")
            refusals[(status, str(r.get("code") or ""), _text(auth), _text(limits))] += 1
            sources[str(r.get("source_ip") or "-")] += 1
        if any(str(k).startswith(GUARDRAIL_PREFIXES) for k in verdicts):
            verdict_groups[json.dumps(verdicts, sort_keys=True)] += 1
        lat = r.get("latency_ms")
        if isinstance(lat, int | float) and lat > 0:
            latencies.append(float(lat))
    latencies.sort()
    return Tallies(
        requests=[
            RequestGroup(
                principal=p, tenant=t, status=s, requests=n, prompt_tokens=pt, completion_tokens=ct, spend_micro_usd=c
            )
            for (p, t, s), (n, pt, ct, c) in requests.items()
        ],
        refusals=[
            RefusalGroup(status=s, code=code, auth=auth, limits=limits, count=n)
            for (s, code, auth, limits), n in refusals.items()
        ],
        failure_sources=dict(sources),
        guardrail_hits=guardrail_hits((json.loads(v), n) for v, n in verdict_groups.items()),
        latency=Latency(
            count=len(latencies),
            p50=nearest_rank(latencies, 50),
            p99=nearest_rank(latencies, 99),
            max=latencies[-1] if latencies else 0.0,
        ),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# ------------------------------------------------------------------------------------------------------------ report
class PrincipalRow(_Model):
    principal: str
    requests: int
    ok: int
    refused: int
    tokens: int
    spend_micro_usd: int


class TenantRow(_Model):
    tenant: str
    requests: int
    refused: int
    tokens: int
    spend_micro_usd: int
    spend_usd: str


class RefusalRow(_Model):
    status: int
    code: str
    count: int


class SourceRow(_Model):
    source_ip: str
    count: int


class AuditReport(_Model):
    """What the alarms would see, from audit records (one per request). `--json` prints exactly this."""

    requests: int
    status: dict[str, int]
    principals: list[PrincipalRow]
    tenants: list[TenantRow]
    refusals: list[RefusalRow]
    auth_failures_by_reason: dict[str, int]
    top_failure_sources: list[SourceRow]
    throttles_by_limit: dict[str, int]
    guardrail_hits: dict[str, int]
    tokens_by_principal: dict[str, int]
    latency_ms: Latency
    source: list[str] = Field(default_factory=list)  # the log files, or the stack's log groups


def build_report(t: Tallies, *, top: int = 10, source: list[str] | None = None) -> AuditReport:
    status: Counter[str] = Counter()
    principals: dict[str, Counter[str]] = {}
    tenants: dict[str, Counter[str]] = {}
    for g in t.requests:
        tokens = g.prompt_tokens + g.completion_tokens
        status[str(g.status)] += g.requests
        refused = g.requests if g.status >= 400 else 0
        p = principals.setdefault(g.principal or UNAUTHENTICATED, Counter())
        p.update(
            requests=g.requests,
            ok=g.requests if 200 <= g.status < 300 else 0,
            refused=refused,
            tokens=tokens,
            spend_micro_usd=g.spend_micro_usd,
        )
        tenants.setdefault(g.tenant or NO_TENANT, Counter()).update(
            requests=g.requests, refused=refused, tokens=tokens, spend_micro_usd=g.spend_micro_usd
        )
    refusals: Counter[tuple[int, str]] = Counter()
    auth_reasons: Counter[str] = Counter()
    throttles: Counter[str] = Counter()
    for r in t.refusals:
        refusals[(r.status, r.code)] += r.count
        if r.status == 401 and r.auth is not None:
            auth_reasons[r.auth] += r.count
        if r.status == 429:
            throttles[r.code or (r.limits if r.limits is not None else "-")] += r.count
    return AuditReport(
        requests=sum(status.values()),
        status=dict(sorted(status.items())),
        principals=[
            PrincipalRow(principal=name, **_fields(v, "requests", "ok", "refused", "tokens", "spend_micro_usd"))
            for name, v in sorted(principals.items(), key=lambda kv: (-kv[1]["requests"], kv[0]))
        ],
        tenants=[
            TenantRow(
                tenant=name,
                **_fields(v, "requests", "refused", "tokens", "spend_micro_usd"),
                spend_usd=micros_to_usd(v["spend_micro_usd"]),
            )
            for name, v in sorted(tenants.items(), key=lambda kv: (-kv[1]["spend_micro_usd"], kv[0]))
        ],
        refusals=[
            RefusalRow(status=s, code=code, count=n)
            for (s, code), n in sorted(refusals.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        auth_failures_by_reason=_ranked(auth_reasons),
        top_failure_sources=[
            SourceRow(source_ip=ip, count=n)
            for ip, n in list(_ranked(Counter(t.failure_sources)).items())[: max(top, 0)]
        ],
        throttles_by_limit=dict(sorted(throttles.items())),
        guardrail_hits=dict(sorted(t.guardrail_hits.items())),
        tokens_by_principal=_ranked(Counter({name: v["tokens"] for name, v in principals.items() if v["tokens"]})),
        latency_ms=t.latency,
        source=source or [],
    )


def summarize(records: Iterable[Mapping[str, Any]], *, top: int = 10) -> AuditReport:
    """The report of these audit records (the local log's)."""
    return build_report(tally(records), top=top)


def _fields(counter: Counter[str], *names: str) -> dict[str, int]:
    return {name: counter[name] for name in names}


def _ranked(counter: Counter[str]) -> dict[str, int]:
    """Largest first, ties by name: the same order whichever source counted."""
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------------------------------------------------------- human
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


def human_report(s: AuditReport, *, top: int) -> str:
    lat = s.latency_ms
    lines = [
        f"{s.requests} requests  ({', '.join(f'{k}: {v}' for k, v in s.status.items()) or 'none'})",
        f"latency  p50 {lat.p50:.1f} ms  p99 {lat.p99:.1f} ms  max {lat.max:.1f} ms  ({lat.count} timed)",
        "",
    ]
    lines += _table(
        "Requests per key / principal",
        ("PRINCIPAL", "REQUESTS", "OK", "REFUSED", "TOKENS"),
        [(p.principal, p.requests, p.ok, p.refused, p.tokens) for p in s.principals[:top]],
    )
    lines += _table(
        "By tenant",
        ("TENANT", "REQUESTS", "REFUSED", "TOKENS", "SPEND USD"),
        [(t.tenant, t.requests, t.refused, t.tokens, t.spend_usd) for t in s.tenants[:top]],
    )
    lines += _table(
        "Refusals by reason", ("STATUS CODE", "COUNT"), [(f"{r.status} {r.code}", r.count) for r in s.refusals]
    )
    lines += _table("Authentication failures by reason", ("REASON", "COUNT"), list(s.auth_failures_by_reason.items()))
    lines += _table(
        "Top sources of failures", ("SOURCE IP", "FAILURES"), [(r.source_ip, r.count) for r in s.top_failure_sources]
    )
    lines += _table("Throttles by limit", ("LIMIT", "COUNT"), list(s.throttles_by_limit.items()))
    lines += _table("Guardrail hits", ("KIND", "COUNT"), list(s.guardrail_hits.items()))
    lines += _table("Tokens per key / principal", ("PRINCIPAL", "TOKENS"), list(s.tokens_by_principal.items())[:top])
    return "\n".join(lines).rstrip("\n") + "\n"
