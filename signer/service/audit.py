"""The audit log: append-only and hash-chained.

Entry n's hash is SHA-256 over the canonical JSON of its fields and entry n-1's hash, so
editing or deleting any entry breaks every hash after it. The newest (seq, hash) is also
kept in `settings` (written in the same transaction), so dropping the newest entries is
caught too. The database refuses UPDATE/DELETE on the table (triggers); `verify` catches
whoever got past them. Someone able to rewrite the whole chain and the head is caught only
by comparing with a head recorded elsewhere: `cf-sign service audit verify` prints it.

Entries are appended under the publication lock (every change takes it), so the chain
never forks. Attestation intake is not an admin change and is not logged here: the
attestations table records who (which keys) attested what and when.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.service.db.models import AuditEntry, Setting
from signer.trust.canonical import canonical_bytes

GENESIS = "0" * 64
HEAD_SETTING = "audit_head"


def _detail_text(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(seq: int, at: str, actor: str, action: str, detail: str, prev_hash: str) -> str:
    body: dict[str, Any] = {
        "action": action,
        "actor": actor,
        "at": at,
        "detail": detail,
        "prev_hash": prev_hash,
        "seq": seq,
    }
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(session: Session, actor: str, action: str, detail: Mapping[str, Any]) -> AuditEntry:
    """Add an entry in the caller's transaction (which must hold the publication lock)."""
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq = last.seq + 1 if last else 1
    prev = last.entry_hash if last else GENESIS
    at, text = now_text(), _detail_text(detail)
    entry = AuditEntry(
        seq=seq,
        at=at,
        actor=actor[:128],
        action=action,
        detail=text,
        prev_hash=prev,
        entry_hash=entry_hash(seq, at, actor[:128], action, text, prev),
    )
    session.add(entry)
    session.merge(Setting(name=HEAD_SETTING, value=f"{seq}:{entry.entry_hash}"))
    return entry


def page(session: Session, after: int, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries after sequence number `after`, oldest first (all of them without `limit`)."""
    stmt = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [entry_dict(e) for e in session.scalars(stmt)]


def head_seq(session: Session) -> int:
    return session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) or 0


def withdrawals_after(session: Session, after: int) -> list[tuple[str, str]]:
    """(subdir, filename) of the attestations withdrawn in entries after `after`."""
    out: list[tuple[str, str]] = []
    for (detail,) in session.execute(
        select(AuditEntry.detail).where(
            AuditEntry.seq > after, AuditEntry.action == "attestation.withdraw"
        )
    ):
        subdir, _, filename = str(json.loads(detail).get("artifact", "")).partition("/")
        if subdir and filename:
            out.append((subdir, filename))
    return out


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "detail": json.loads(entry.detail),
        "prev_hash": entry.prev_hash,
        "hash": entry.entry_hash,
    }


@dataclass
class AuditReport:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _entries(session: Session) -> Iterator[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=1000)
    yield from session.scalars(stmt)


def verify(session: Session, limit: int = 20) -> AuditReport:
    """Walk the whole chain; report each entry that was edited, removed or reordered."""
    report = AuditReport()
    expected_seq, prev = 1, GENESIS
    for entry in _entries(session):
        report.entries += 1
        if entry.seq != expected_seq:
            report.problems.append(
                f"entry {expected_seq}"
                + (f"..{entry.seq - 1}" if entry.seq - 1 > expected_seq else "")
                + f": missing (deleted?): the log jumps to entry {entry.seq}"
            )
        if entry.prev_hash != prev:
            report.problems.append(
                f"entry {entry.seq}: prev_hash does not match the entry before it"
            )
        computed = entry_hash(
            entry.seq, entry.at, entry.actor, entry.action, entry.detail, entry.prev_hash
        )
        if computed != entry.entry_hash:
            report.problems.append(f"entry {entry.seq}: content does not match its hash (edited)")
        expected_seq, prev = entry.seq + 1, entry.entry_hash
        report.head_seq, report.head_hash = entry.seq, entry.entry_hash
    head = session.get(Setting, HEAD_SETTING)
    if head is not None:
        seq_text, _, hash_text = head.value.partition(":")
        if seq_text != str(report.head_seq) or hash_text != report.head_hash:
            report.problems.append(
                f"the log ends at entry {report.head_seq} but its recorded head is entry "
                f"{seq_text} (newest entries deleted or replaced?)"
            )
    elif report.entries:
        report.problems.append("the recorded head of the log is missing")
    del report.problems[limit:]
    return report
