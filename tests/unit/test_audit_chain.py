"""Hash-chained audit records: an intact log verifies; a deleted, edited, inserted or reordered record is named."""

from __future__ import annotations

import io
import itertools
import json
import threading
import uuid
from typing import Any

import pytest

from bulwark.observability.audit import GENESIS, AuditChain, audit_records, emit_audit, record_hash, verify
from bulwark.observability.logs import make_logger


def _write_session(n: int = 6, chains: int = 1) -> list[str]:
    """Log lines exactly as the functions write them: Powertools JSON with the sealed record under "audit"."""
    buf = io.StringIO()
    log = make_logger(f"audit-{uuid.uuid4().hex[:8]}", stream=buf)
    procs = [AuditChain(f"bulwark-validator:{i}{uuid.uuid4().hex}") for i in range(chains)]
    for i in range(n):
        for c in procs:
            log.append_keys(correlation_id=str(uuid.uuid4()))
            emit_audit(
                log,
                {
                    "principal": f"key{i % 2}",
                    "status": 200 if i % 3 else 429,
                    "code": "" if i % 3 else "requests_per_minute_exceeded",
                    "source_ip": "203.0.113.5",
                    "verdicts": {"auth": "ok", "limits": "admitted"},
                    "latency_ms": 12.5 + i,
                    "prompt_tokens": 10,
                },
                chain=c,
            )
        log.info("an unrelated line between audit records")
    return buf.getvalue().splitlines()


def _records(lines: list[str]) -> list[dict[str, Any]]:
    return list(audit_records(lines))


def _kinds(lines: list[str]) -> list[tuple[str, int | None]]:
    return [(i.kind, i.seq) for i in verify(_records(lines)).issues]


def test_intact_session_verifies() -> None:
    # Given a session's log, When verified, Then every chain is intact
    lines = _write_session()
    recs = _records(lines)
    result = verify(recs)
    assert result.ok, result.issues
    assert result.records == 6
    assert recs[0]["prev"] == GENESIS and recs[0]["seq"] == 1
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(recs))
    assert all(r["hash"] == record_hash(r) for r in recs)
    assert all(r["request_id"] for r in recs)  # filled from the logger's correlation id


def _audit_line_indexes(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if '"audit"' in line]


def test_deleted_record_detected() -> None:
    lines = _write_session()
    idx = _audit_line_indexes(lines)
    del lines[idx[2]]  # seq 3
    assert _kinds(lines) == [("deleted", 3)]


def test_deleted_first_record_detected() -> None:
    lines = _write_session()
    del lines[_audit_line_indexes(lines)[0]]
    assert ("deleted", 1) in _kinds(lines)


def test_edited_record_detected() -> None:
    # Given a record whose status was changed from 429 to 200 (to hide a throttle)
    lines = _write_session()
    i = _audit_line_indexes(lines)[3]
    entry = json.loads(lines[i])
    assert entry["audit"]["seq"] == 4
    entry["audit"]["status"] = 201
    lines[i] = json.dumps(entry)
    assert _kinds(lines) == [("edited", 4)]


def test_edited_record_with_recomputed_hash_detected() -> None:
    # Given an editor who also recomputed the record's own hash: the next record no longer links to it
    lines = _write_session()
    i = _audit_line_indexes(lines)[1]
    entry = json.loads(lines[i])
    entry["audit"]["principal"] = "someone-else"
    entry["audit"]["hash"] = record_hash(entry["audit"])
    lines[i] = json.dumps(entry)
    assert _kinds(lines) == [("edited", 2)]


def test_inserted_record_detected() -> None:
    # Given a forged record claiming seq 3, correctly linked to record 2 and with a valid hash of its own
    lines = _write_session()
    idx = _audit_line_indexes(lines)
    two = json.loads(lines[idx[1]])["audit"]
    forged = {**two, "principal": "forged", "seq": 3, "prev": two["hash"]}
    forged["hash"] = record_hash(forged)
    lines.insert(idx[2], json.dumps({"level": "INFO", "message": "audit", "audit": forged}))
    assert _kinds(lines) == [("inserted", 3)]


def test_inserted_unsealed_record_detected() -> None:
    lines = _write_session()
    lines.insert(3, json.dumps({"message": "audit", "audit": {"request_id": "r-x", "status": 200}}))
    assert [i.kind for i in verify(_records(lines)).issues] == ["unsealed"]


def test_reordered_records_detected() -> None:
    lines = _write_session()
    idx = _audit_line_indexes(lines)
    lines[idx[2]], lines[idx[3]] = lines[idx[3]], lines[idx[2]]  # seq 3 and 4 swapped
    assert _kinds(lines) == [("reordered", 3)]


def test_interleaved_chains_verify_per_chain() -> None:
    # Given three processes writing into one log, records interleaved
    lines = _write_session(n=5, chains=3)
    result = verify(_records(lines))
    assert result.ok, result.issues
    assert len(result.chains) == 3
    assert all(c.records == 5 and c.first_seq == 1 and c.last_seq == 5 for c in result.chains.values())


def test_tampering_in_one_chain_names_that_chain() -> None:
    lines = _write_session(n=4, chains=2)
    recs = _records(lines)
    victim = recs[5]  # seq 3 of the second chain
    recs = [r for r in recs if r is not victim]
    issues = verify(recs).issues
    assert [(i.chain, i.seq, i.kind) for i in issues] == [(victim["chain"], 3, "deleted")]


def test_window_without_genesis() -> None:
    # A CloudWatch --since window starts mid-chain: that is not a deletion
    recs = _records(_write_session())[2:]
    assert verify(recs, require_genesis=False).ok
    assert [(i.kind, i.seq) for i in verify(recs).issues] == [("deleted", 1), ("deleted", 2)]


def test_concurrent_writers_keep_log_order_equal_to_seq_order() -> None:
    # The local worker runs handlers on a thread pool: sealing and writing happen under one lock
    buf = io.StringIO()
    log = make_logger(f"audit-mt-{uuid.uuid4().hex[:6]}", stream=buf)
    chain = AuditChain("bulwark-validator:mt")

    def work() -> None:
        for _ in range(50):
            emit_audit(log, {"request_id": "r", "status": 200}, chain=chain)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify(list(audit_records(buf.getvalue().splitlines())))
    assert result.ok and result.records == 400


@pytest.mark.parametrize(
    "value",
    ["jane@example.com", "bwk_0123456789ab_secretsecretsecret", "4111 1111 1111 1111"],
)
def test_sealed_record_is_already_redacted(value: str) -> None:
    # The logger redacts again when writing; a sealed record must come out unchanged, or its hash would break
    buf = io.StringIO()
    log = make_logger(f"audit-r-{uuid.uuid4().hex[:6]}", stream=buf)
    sealed = emit_audit(log, {"principal": f"jwt:https://idp.example.com:{value}", "note": value}, chain=AuditChain())
    assert value not in buf.getvalue()
    [written] = list(audit_records(buf.getvalue().splitlines()))
    assert written == sealed
    assert verify([written]).ok


def test_audit_written_even_when_info_is_filtered() -> None:
    buf = io.StringIO()
    log = make_logger(f"audit-w-{uuid.uuid4().hex[:6]}", stream=buf)
    log.setLevel("WARNING")
    emit_audit(log, {"status": 200}, chain=AuditChain())
    assert len(list(audit_records(buf.getvalue().splitlines()))) == 1
