"""Feedstocks, their keys and their package names: the registry behind the delegations.

Each function edits the registry inside a `Change` (publisher.py) and marks what must be
re-published; it raises `ServiceError`s (4xx) for requests that cannot be applied, so the
whole change rolls back and nothing is published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.service.db.models import Feedstock, FeedstockKey, FeedstockOutput
from signer.service.errors import BadRequest, Conflict, NotFound
from signer.service.publisher import Change
from signer.trust.errors import FormatError
from signer.trust.feedstocks import check_name
from signer.trust.keys import PublicKey
from signer.trust.timefmt import format_time

MAX_THRESHOLD = 16


def feedstock_name(name: str) -> str:
    try:
        check_name(name, "feedstock", "name")
    except FormatError as exc:
        raise BadRequest(f"feedstock name: {exc.reason}", code="invalid_name") from None
    if name.endswith("-feedstock"):
        raise BadRequest(
            f"{name!r}: give feedstock names without the -feedstock suffix", code="invalid_name"
        )
    return name


def _names(values: Iterable[str], *, glob: bool) -> list[str]:
    out: list[str] = []
    for value in values:
        try:
            out.append(check_name(value, "outputs", "name", glob=glob))
        except FormatError as exc:
            raise BadRequest(exc.reason, code="invalid_name") from None
    return sorted(set(out))


def parse_key(obj: Mapping[str, Any]) -> PublicKey:
    try:
        return PublicKey.from_dict(dict(obj), "key", "key")
    except FormatError as exc:
        raise BadRequest(f"{exc.field}: {exc.reason}", code="invalid_key") from None


def get_feedstock(session: Session, name: str) -> Feedstock:
    feedstock = session.scalars(select(Feedstock).where(Feedstock.name == name)).first()
    if feedstock is None:
        raise NotFound(f"feedstock {name!r} is not registered", code="unknown_feedstock")
    return feedstock


def active_keys(feedstock: Feedstock) -> list[FeedstockKey]:
    return [k for k in feedstock.keys if k.revoked_at is None]


def view(feedstock: Feedstock) -> dict[str, Any]:
    active = active_keys(feedstock)
    return {
        "name": feedstock.name,
        "threshold": feedstock.threshold,
        "delegated": len(active) >= feedstock.threshold,
        "outputs": sorted(o.name for o in feedstock.outputs if not o.is_glob),
        "output_globs": sorted(o.name for o in feedstock.outputs if o.is_glob),
        "keys": [
            {
                "keyid": k.keyid,
                "key": json.loads(k.key_json),
                "added_at": iso(k.added_at),
                "revoked_at": iso(k.revoked_at) if k.revoked_at else None,
            }
            for k in sorted(feedstock.keys, key=lambda k: k.added_at)
        ],
    }


def iso(moment: datetime) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ` (SQLite hands datetimes back without their zone)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)


def _check_threshold(threshold: int) -> int:
    if not 1 <= threshold <= MAX_THRESHOLD:
        raise BadRequest(f"threshold must be 1..{MAX_THRESHOLD}", code="invalid_threshold")
    return threshold


def _add_key(change: Change, feedstock: Feedstock, key: PublicKey) -> FeedstockKey:
    existing = change.session.scalars(
        select(FeedstockKey).where(FeedstockKey.keyid == key.keyid)
    ).first()
    if existing is not None:
        if existing.feedstock_id != feedstock.id:
            raise Conflict(f"key {key.keyid} is registered to another feedstock")
        if existing.revoked_at is not None:
            raise Conflict(f"key {key.keyid} was revoked; a revoked key never comes back")
        raise Conflict(f"key {key.keyid} is already registered for {feedstock.name}")
    row = FeedstockKey(
        keyid=key.keyid,
        key_json=json.dumps(key.to_dict(), sort_keys=True),
        added_at=change.now,
    )
    feedstock.keys.append(row)
    return row


def _set_outputs(feedstock: Feedstock, names: Iterable[str], *, glob: bool, add: bool) -> None:
    present = {o.name for o in feedstock.outputs if o.is_glob == glob}
    wanted = set(names)
    if add:
        for name in sorted(wanted - present):
            feedstock.outputs.append(FeedstockOutput(name=name, is_glob=glob))
    else:
        for output in [o for o in feedstock.outputs if o.is_glob == glob and o.name in wanted]:
            feedstock.outputs.remove(output)


def create_feedstock(
    change: Change,
    name: str,
    *,
    outputs: Sequence[str] = (),
    output_globs: Sequence[str] = (),
    keys: Sequence[Mapping[str, Any]] = (),
    threshold: int = 1,
) -> Feedstock:
    name = feedstock_name(name)
    parsed = [parse_key(k) for k in keys]
    _check_threshold(threshold)
    session = change.session
    if session.scalars(select(Feedstock.id).where(Feedstock.name == name)).first() is not None:
        raise Conflict(f"feedstock {name!r} is already registered")
    feedstock = Feedstock(name=name, threshold=threshold, created_at=change.now)
    session.add(feedstock)
    session.flush()
    _set_outputs(feedstock, _names(outputs, glob=False), glob=False, add=True)
    _set_outputs(feedstock, _names(output_globs, glob=True), glob=True, add=True)
    for key in parsed:
        _add_key(change, feedstock, key)
    change.delegations_changed = True
    change.audit(
        "feedstock.register",
        {
            "feedstock": name,
            "threshold": threshold,
            "outputs": sorted(set(outputs)),
            "output_globs": sorted(set(output_globs)),
            "keyids": [k.keyid for k in parsed],
        },
    )
    return feedstock


def delete_feedstock(change: Change, name: str) -> None:
    feedstock = get_feedstock(change.session, name)
    change.session.delete(feedstock)
    change.delegations_changed = True
    change.audit("feedstock.remove", {"feedstock": name})


def update_feedstock(
    change: Change,
    name: str,
    *,
    add_outputs: Sequence[str] = (),
    remove_outputs: Sequence[str] = (),
    add_globs: Sequence[str] = (),
    remove_globs: Sequence[str] = (),
    threshold: int | None = None,
) -> Feedstock:
    feedstock = get_feedstock(change.session, name)
    _set_outputs(feedstock, _names(remove_outputs, glob=False), glob=False, add=False)
    _set_outputs(feedstock, _names(remove_globs, glob=True), glob=True, add=False)
    _set_outputs(feedstock, _names(add_outputs, glob=False), glob=False, add=True)
    _set_outputs(feedstock, _names(add_globs, glob=True), glob=True, add=True)
    if threshold is not None:
        feedstock.threshold = _check_threshold(threshold)
    change.delegations_changed = True
    detail: dict[str, Any] = {"feedstock": name}
    for label, values in (
        ("add_outputs", add_outputs),
        ("remove_outputs", remove_outputs),
        ("add_globs", add_globs),
        ("remove_globs", remove_globs),
    ):
        if values:
            detail[label] = sorted(set(values))
    if threshold is not None:
        detail["threshold"] = threshold
    change.audit("feedstock.update", detail)
    return feedstock


def add_key(change: Change, name: str, key_obj: Mapping[str, Any]) -> FeedstockKey:
    key = parse_key(key_obj)
    feedstock = get_feedstock(change.session, name)
    row = _add_key(change, feedstock, key)
    change.delegations_changed = True
    change.audit("key.add", {"feedstock": name, "keyid": key.keyid, "key": key.to_dict()})
    return row


def revoke_key(change: Change, name: str, keyid: str) -> FeedstockKey:
    feedstock = get_feedstock(change.session, name)
    row = next((k for k in feedstock.keys if k.keyid == keyid), None)
    if row is None:
        raise NotFound(f"feedstock {name!r} has no key {keyid}", code="unknown_key")
    if row.revoked_at is not None:
        raise Conflict(f"key {keyid} is already revoked")
    row.revoked_at = change.now
    change.delegations_changed = True
    change.audit("key.revoke", {"feedstock": name, "keyid": keyid})
    return row


def import_outputs(
    change: Change,
    outputs: Mapping[str, Sequence[str]],
    output_globs: Mapping[str, Sequence[str]],
    *,
    replace: bool,
) -> dict[str, int]:
    """conda-forge's feedstock-outputs mapping (name -> feedstocks) and autoreg globs.

    Feedstocks not yet registered are created without keys (not delegated until a key is
    added). With `replace`, each feedstock named gets exactly the names given (others
    keep theirs); otherwise names are added.
    """
    by_feedstock: dict[str, set[str]] = {}
    for package, feedstocks in outputs.items():
        package = _names([package], glob=False)[0]
        for fs in feedstocks:
            by_feedstock.setdefault(feedstock_name(fs), set()).add(package)
    globs: dict[str, list[str]] = {
        feedstock_name(fs): _names(patterns, glob=True) for fs, patterns in output_globs.items()
    }
    session = change.session
    names = sorted(set(by_feedstock) | set(globs))
    known: dict[str, Feedstock] = {}
    for start in range(0, len(names), 5000):  # bounded IN lists (SQLite's variable limit)
        chunk = names[start : start + 5000]
        known.update(
            (f.name, f) for f in session.scalars(select(Feedstock).where(Feedstock.name.in_(chunk)))
        )
    created = 0
    for name in names:
        feedstock = known.get(name)
        if feedstock is None:
            feedstock = Feedstock(name=name, threshold=1, created_at=change.now)
            session.add(feedstock)
            created += 1
        for glob, wanted in ((False, by_feedstock.get(name)), (True, globs.get(name))):
            if wanted is None:
                continue
            if replace:
                stale = {o.name for o in feedstock.outputs if o.is_glob == glob} - set(wanted)
                _set_outputs(feedstock, stale, glob=glob, add=False)
            _set_outputs(feedstock, wanted, glob=glob, add=True)
    change.delegations_changed = True
    summary = {
        "feedstocks": len(names),
        "created": created,
        "names": len(outputs),
        "globs": sum(len(g) for g in globs.values()),
    }
    change.audit("outputs.import", {**summary, "replace": replace})
    return summary
