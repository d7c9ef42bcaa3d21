"""Online root signing events: propose root N+1, collect detached signatures, publish.

The offline event (signer.ceremony.event) run by the service: admins add detached signatures
(e.g. pushed from an offline event directory by `cf-sign ceremony push`); once a threshold
of the current root's keys AND of the proposal's own keys have signed, an admin publishes
it, which is `POST /v1/admin/roots` with the assembled document. Every step is audited.

Only OpenPGP-style signatures count (conda ignores raw signatures on roots); a signature by
a key in neither root is refused, as is one that does not verify.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from signer.service.bootstrap import newest_root, publish_root
from signer.service.db.models import Base, UTCDateTime
from signer.service.errors import BadRequest, Conflict, NotFound
from signer.service.publisher import Change, Publisher
from signer.trust.errors import FormatError
from signer.trust.metadata import (
    Root,
    Signable,
    Signature,
    SignedMetadata,
    is_public_key_hex,
    parse_metadata,
)
from signer.trust.threshold import check_signature, verify_threshold

OPEN = "open"
PUBLISHED = "published"
MAX_HOLDER = 128


class SigningEvent(Base):
    __tablename__ = "signing_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(BigInteger)
    signed_sha256: Mapped[str] = mapped_column(String(64), index=True)
    proposed: Mapped[bytes] = mapped_column(LargeBinary)  # the unsigned document's file bytes
    previous: Mapped[bytes] = mapped_column(LargeBinary)  # the root it must chain from
    holders_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(256))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SigningEventSignature(Base):
    __tablename__ = "signing_event_signatures"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("signing_events.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    signature_json: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    added_by: Mapped[str] = mapped_column(String(256))


# ----------------------------------------------------------------------------- helpers


def _doc(data: bytes, source: str) -> SignedMetadata:
    return parse_metadata(data, source, "root")


def _root(doc: SignedMetadata) -> Root:
    assert isinstance(doc.meta, Root)
    return doc.meta


def _signatures(session: Session, event: SigningEvent) -> dict[str, Signature]:
    rows = session.scalars(
        select(SigningEventSignature).where(SigningEventSignature.event_id == event.id)
    ).all()
    return {
        row.key: Signature.from_dict(json.loads(row.signature_json), "database", row.key)
        for row in rows
    }


def _get(session: Session, event_id: int) -> SigningEvent:
    event = session.get(SigningEvent, event_id)
    if event is None:
        raise NotFound(f"no signing event {event_id}", code="unknown_signing_event")
    return event


def status_of(session: Session, event: SigningEvent) -> dict[str, Any]:
    """`{"id", "role", "version", "state", "signed_sha256", "old", "new", "missing", ...}`."""
    proposed, previous = _doc(event.proposed, "proposed"), _doc(event.previous, "previous")
    sigs = _signatures(session, event)
    message = proposed.envelope.canonical
    counts = {}
    for label, delegation in (
        ("old", _root(previous).root_keys),
        ("new", _root(proposed).root_keys),
    ):
        result = verify_threshold(message, sigs, delegation, label, allow_raw=False)
        counts[label] = {"valid": len(result.signed), "threshold": delegation.threshold}
    holders: dict[str, str] = json.loads(event.holders_json)
    keys = dict.fromkeys(_root(previous).root_keys.pubkeys + _root(proposed).root_keys.pubkeys)
    return {
        "id": event.id,
        "role": event.role,
        "version": event.version,
        "state": event.state,
        "signed_sha256": event.signed_sha256,
        "old": counts["old"],
        "new": counts["new"],
        "missing": [{"key": k, "holder": holders.get(k)} for k in keys if k not in sigs],
        "signatures": sorted(sigs),
        "complete": all(c["valid"] >= c["threshold"] for c in counts.values()),
    }


# ----------------------------------------------------------------------------- steps


def propose(
    publisher: Publisher, proposed: bytes, holders: dict[str, str], *, actor: str
) -> tuple[dict[str, Any], bool]:
    """Open an event for unsigned root N+1 (N = the newest published root).

    The same proposal again returns the open event (so pushes are idempotent): (status, new?).
    """
    try:
        doc = _doc(proposed, "proposed")
    except FormatError as exc:
        raise BadRequest(str(exc), code="invalid_root") from None
    for key, name in holders.items():
        if not is_public_key_hex(key) or not name or len(name) > MAX_HOLDER:
            raise BadRequest(f"holders: {key[:70]!r}: expected 64-hex key -> name", code="holders")
    file_bytes = Signable(doc.envelope.signed, {}, "proposed").to_bytes()  # signatures dropped
    signed_sha = hashlib.sha256(doc.envelope.canonical).hexdigest()
    with publisher.change(actor) as change:
        session = change.session
        existing = session.scalars(
            select(SigningEvent).where(
                SigningEvent.signed_sha256 == signed_sha, SigningEvent.state == OPEN
            )
        ).first()
        if existing is not None:
            return status_of(session, existing), False
        current = newest_root(change)
        version = _root(doc).version
        if version != _root(current).version + 1:
            raise Conflict(
                f"the proposal is root v{version}; the newest published root is "
                f"v{_root(current).version}", code="root_version",
            )  # fmt: skip
        counting = set(_root(current).root_keys.pubkeys) | set(_root(doc).root_keys.pubkeys)
        stray = sorted(set(holders) - counting)
        if stray:
            raise BadRequest(f"holders: {stray[0]} is in neither root", code="holders")
        event = SigningEvent(
            role="root", version=version, signed_sha256=signed_sha, proposed=file_bytes,
            previous=_current_bytes(change, current),
            holders_json=json.dumps(dict(sorted(holders.items()))), state=OPEN,
            created_at=change.now, created_by=actor,
        )  # fmt: skip
        session.add(event)
        session.flush()
        change.audit(
            "signing_event.propose",
            {"event": event.id, "role": "root", "version": version, "signed_sha256": signed_sha},
        )
        return status_of(session, event), True


def _current_bytes(change: Change, current: SignedMetadata) -> bytes:
    """The published bytes of the newest root (as clients hold it)."""
    from signer.service.db.models import Document

    row = change.session.get(Document, current.source)
    assert row is not None
    return bytes(row.data)


def add_signature(
    publisher: Publisher, event_id: int, key: str, signature: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """Add one detached signature; refused unless valid and by a key of either root."""
    if not is_public_key_hex(key):
        raise BadRequest("key: expected 64 lowercase hex digits", code="invalid_key")
    try:
        sig = Signature.from_dict(signature, "signature", "signature")
    except FormatError as exc:
        raise BadRequest(str(exc), code="invalid_signature") from None
    with publisher.change(actor) as change:
        session = change.session
        event = _get(session, event_id)
        if event.state != OPEN:
            raise Conflict(f"signing event {event_id} is {event.state}", code="event_closed")
        proposed, previous = _doc(event.proposed, "proposed"), _doc(event.previous, "previous")
        roles = [
            label
            for label, doc in (("old root", previous), ("new root", proposed))
            if key in _root(doc).root_keys.pubkeys
        ]
        if not roles:
            raise Conflict(f"key {key} is in neither root of this event", code="not_a_root_key")
        why = check_signature(key, sig, proposed.envelope.canonical, allow_raw=False)
        if why is not None:
            raise BadRequest(f"signature by {key}: {why}", code="bad_signature")
        row = session.get(SigningEventSignature, (event.id, key))
        if row is not None:
            if Signature.from_dict(json.loads(row.signature_json), "db", key) == sig:
                return status_of(session, event)
            raise Conflict(f"key {key} has already signed this event", code="already_signed")
        session.add(
            SigningEventSignature(
                event_id=event.id, key=key, signature_json=json.dumps(sig.to_dict()),
                added_at=change.now, added_by=actor,
            )
        )  # fmt: skip
        session.flush()
        change.audit("signing_event.sign", {"event": event.id, "key": key, "roles": roles})
        return status_of(session, event)


def assembled(session: Session, event: SigningEvent) -> bytes:
    proposed = _doc(event.proposed, "proposed")
    return Signable(proposed.envelope.signed, _signatures(session, event), "root").to_bytes()


def publish(
    publisher: Publisher, event_id: int, key_mgr_keyrefs: list[str] | None, *, actor: str
) -> tuple[Change | None, dict[str, Any]]:
    """Publish the assembled root once both thresholds are met (as POST /v1/admin/roots)."""
    with publisher.db.read() as session:
        event = _get(session, event_id)
        state = status_of(session, event)
        if event.state != OPEN:
            raise Conflict(f"signing event {event_id} is {event.state}", code="event_closed")
        if not state["complete"]:
            raise Conflict(
                f"thresholds not met: old root {state['old']['valid']}/"
                f"{state['old']['threshold']}, new root {state['new']['valid']}/"
                f"{state['new']['threshold']}", code="threshold_not_met",
            )  # fmt: skip
        data = assembled(session, event)
    change = publish_root(publisher, data, key_mgr_keyrefs, actor=actor)
    with publisher.change(actor) as closing:
        event = _get(closing.session, event_id)
        event.state, event.published_at = PUBLISHED, closing.now
        closing.audit(
            "signing_event.publish",
            {"event": event_id, "version": event.version,
             "sha256": hashlib.sha256(data).hexdigest()},
        )  # fmt: skip
        final = status_of(closing.session, event)
    return change, final
