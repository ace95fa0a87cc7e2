"""Hash-chained audit records: one per request, so a removed, inserted, reordered or altered record is detectable.

Each process (a Lambda container, a local worker) keeps one chain. A sealed record carries:

- ``chain``: the chain's id (function name and a random id drawn at the first record of the process);
- ``seq``: 1, 2, 3... within the chain;
- ``prev``: the previous record's ``hash`` (64 zeros for the first record, the genesis);
- ``hash``: SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of the record without ``hash``.

Records of many chains interleave in one log (several containers, several functions); verification separates them
by ``chain`` and checks each on its own. What the chain proves, and what it does not: anyone who can rewrite a
whole log can recompute every hash after the point they changed (the chain is not signed). It makes a gap, an edit
or an insertion in an otherwise intact log evident, which is what an append-only store (CloudWatch Logs: no API edits
an event) plus this check gives. A record deleted from the very end of a chain is not detectable from the log alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from bulwark.observability.logs import Redacted, redact_value

GENESIS = "0" * 64
CHAIN_FIELDS = ("chain", "seq", "prev", "hash")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes the hash covers: every field but ``hash``, as canonical JSON."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def _stable(record: Mapping[str, Any]) -> dict[str, Any]:
    """Redact until nothing changes, so the logger's own redaction cannot alter (and so break) a sealed record."""
    current: Any = dict(record)
    for _ in range(4):
        nxt = redact_value(current)
        if nxt == current:
            break
        current = nxt
    # Through JSON and back: the hash must cover exactly what a reader of the log will parse.
    result: dict[str, Any] = json.loads(json.dumps(current, allow_nan=False, default=str))
    return result


class AuditChain:
    """The chain of one process. Thread-safe: sealing and writing happen under one lock, so log order is seq order."""

    def __init__(self, chain_id: str | None = None) -> None:
        self.chain_id = chain_id or _new_chain_id()
        self._seq = 0
        self._prev = GENESIS
        self.lock = threading.Lock()

    def seal(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record, redacted and with its chain fields. Call with `lock` held if the write must follow in order."""
        body = _stable({k: v for k, v in record.items() if k not in CHAIN_FIELDS})
        self._seq += 1
        body.update(chain=self.chain_id, seq=self._seq, prev=self._prev)
        body["hash"] = record_hash(body)
        self._prev = body["hash"]
        return body


def _new_chain_id() -> str:
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("POWERTOOLS_SERVICE_NAME") or "bulwark"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:64]
    return f"{safe}:{uuid.uuid4().hex}"


_chain_lock = threading.Lock()
_process_chain: list[AuditChain] = []


def process_chain() -> AuditChain:
    """This process's chain, created on the first audit record (not at import time)."""
    with _chain_lock:
        if not _process_chain:
            _process_chain.append(AuditChain())
        return _process_chain[0]


def emit_audit(
    logger: Logger, record: Mapping[str, Any], *, chain: AuditChain | None = None, every_invocation: bool = False
) -> dict[str, Any]:
    """Seal `record` into the chain and write it as the ``audit`` key of one log line. Returns the sealed record.

    Written at INFO, or at the logger's level if INFO is filtered out: an audit record is never dropped, since a
    missing record would read as a deleted one. ``every_invocation`` marks a writer that audits every invocation
    (the validator): then an invocation of its environment without a record, even after the chain's last one, is a
    deleted record, not a chain that ended with its environment (see `bulwark audit verify`).
    """
    chain = chain or process_chain()
    record = dict(record)
    if every_invocation:
        record["every_invocation"] = True
    if not record.get("request_id"):
        cid = logger.get_correlation_id()
        if cid:
            record["request_id"] = cid
    record.setdefault("ts", round(time.time() * 1000))
    std = logging.getLogger(logger.name)
    with chain.lock:
        sealed = chain.seal(record)
        # Sealed records are stable under redaction (see _stable): the formatter need not scan them again.
        if std.isEnabledFor(logging.INFO):
            logger.info("audit", extra={"audit": Redacted(sealed)})
        else:
            std.log(std.getEffectiveLevel(), "audit", extra={"audit": Redacted(sealed)})
    return sealed


# ---------------------------------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Issue:
    chain: str
    seq: int | None
    kind: str  # deleted | edited | inserted | reordered | unsealed | bad_genesis
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "seq": self.seq, "kind": self.kind, "detail": self.detail}


@dataclass
class ChainSummary:
    chain: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "records": self.records, "first_seq": self.first_seq, "last_seq": self.last_seq}


@dataclass
class VerifyResult:
    chains: dict[str, ChainSummary] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.issues

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "chains": [c.as_dict() for c in self.chains.values()],
            "issues": [i.as_dict() for i in self.issues],
        }


def audit_of(entry: Any) -> dict[str, Any] | None:
    """The audit record in one parsed log line (``{"audit": {...}}``), or the line itself if it is one."""
    if not isinstance(entry, dict):
        return None
    inner = entry.get("audit")
    if isinstance(inner, dict):
        return inner
    if "hash" in entry and "chain" in entry and "seq" in entry:
        return entry
    return None


def audit_records(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Audit records from raw log lines (JSON objects; other lines are skipped)."""
    for raw in lines:
        line = raw.strip()
        if not line.startswith("{") or "audit" not in line:
            continue
        try:
            rec = audit_of(json.loads(line))
        except ValueError:
            continue
        if rec is not None:
            yield rec


def verify(records: Iterable[Mapping[str, Any]], *, require_genesis: bool = True) -> VerifyResult:
    """Check every chain in `records` (in log order). `require_genesis=False` when the log may start mid-chain
    (a time window, retention)."""
    result = VerifyResult()
    per_chain: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        result.records += 1
        chain, seq, prev, declared = (rec.get(k) for k in CHAIN_FIELDS)
        if not (
            isinstance(chain, str) and isinstance(seq, int) and isinstance(prev, str) and isinstance(declared, str)
        ):
            who = rec.get("request_id", "?")
            result.issues.append(
                Issue(str(chain or "?"), None, "unsealed", f"an audit record without chain fields (request {who})")
            )
            continue
        per_chain.setdefault(chain, []).append(rec)
    for chain, recs in per_chain.items():
        summary = ChainSummary(chain, records=len(recs))
        seqs = [int(r["seq"]) for r in recs]
        summary.first_seq, summary.last_seq = min(seqs), max(seqs)
        result.chains[chain] = summary
        result.issues.extend(_verify_chain(chain, recs, require_genesis))
    result.issues.sort(key=lambda i: (i.chain, i.seq if i.seq is not None else -1, i.kind))
    return result


def _verify_chain(chain: str, recs: list[Mapping[str, Any]], require_genesis: bool) -> list[Issue]:
    issues: list[Issue] = []
    intact: list[Mapping[str, Any]] = []
    for r in recs:
        if record_hash(r) != r["hash"]:
            issues.append(Issue(chain, int(r["seq"]), "edited", "the record's content does not match its hash"))
        else:
            intact.append(r)
    by_seq: dict[int, list[Mapping[str, Any]]] = {}
    for r in intact:
        by_seq.setdefault(int(r["seq"]), []).append(r)
    canonical_by_seq = _canonical(chain, intact, by_seq, issues)
    issues += _reordered(chain, recs, by_seq)
    issues += _gaps(chain, recs, require_genesis)
    if any(int(r["seq"]) >= 1 for r in recs):  # a chain of made-up seqs only has no links worth checking
        issues += _broken_links(chain, canonical_by_seq)
    return issues


def _canonical(
    chain: str, intact: list[Mapping[str, Any]], by_seq: dict[int, list[Mapping[str, Any]]], issues: list[Issue]
) -> dict[int, Mapping[str, Any]]:
    """One record per seq. Two intact records claiming one seq: the one the next record links to is genuine, the
    other was inserted (appended to `issues`)."""
    linked_to = {r["prev"] for r in intact}
    canonical_by_seq: dict[int, Mapping[str, Any]] = {}
    for seq, group in by_seq.items():
        if len(group) == 1:
            canonical_by_seq[seq] = group[0]
            continue
        genuine = [r for r in group if r["hash"] in linked_to]
        keep = genuine[0] if len(genuine) == 1 else group[0]
        canonical_by_seq[seq] = keep
        for r in group:
            if r is not keep:
                issues.append(Issue(chain, seq, "inserted", f"a second record claims seq {seq}"))
    return canonical_by_seq


def _reordered(chain: str, recs: list[Mapping[str, Any]], by_seq: dict[int, list[Mapping[str, Any]]]) -> list[Issue]:
    """In one process records are written in seq order, so a record after a higher seq was moved."""
    issues: list[Issue] = []
    highest = 0
    for r in recs:
        seq = int(r["seq"])
        if seq < highest and not (seq in by_seq and len(by_seq[seq]) > 1):
            issues.append(Issue(chain, seq, "reordered", f"record {seq} appears after record {highest}"))
        highest = max(highest, seq)
    return issues


def _gaps(chain: str, recs: list[Mapping[str, Any]], require_genesis: bool) -> list[Issue]:
    """A missing seq is a deleted record. Chains count from 1: anything below was made up."""
    issues = [Issue(chain, int(r["seq"]), "inserted", "seq numbers start at 1") for r in recs if int(r["seq"]) < 1]
    all_seqs = {int(r["seq"]) for r in recs if int(r["seq"]) >= 1}
    if not all_seqs:
        return issues
    start = 1 if require_genesis else min(all_seqs)
    issues += [
        Issue(chain, seq, "deleted", f"record {seq} is missing")
        for seq in range(start, max(all_seqs) + 1)
        if seq not in all_seqs
    ]
    return issues


def _broken_links(chain: str, canonical_by_seq: dict[int, Mapping[str, Any]]) -> list[Issue]:
    """Each record names its predecessor's hash."""
    issues: list[Issue] = []
    for seq in sorted(canonical_by_seq):
        r = canonical_by_seq[seq]
        if seq == 1:
            if r["prev"] != GENESIS:
                issues.append(Issue(chain, 1, "bad_genesis", "the first record does not start from the genesis"))
            continue
        before = canonical_by_seq.get(seq - 1)
        if before is not None and r["prev"] != before["hash"]:
            # The predecessor was rewritten with a freshly computed hash, or this record was forged into place.
            issues.append(
                Issue(
                    chain, seq - 1, "edited", f"record {seq} does not link to record {seq - 1} (rewritten or replaced)"
                )
            )
    return issues
