"""Feedstocks, their keys and their package names: the registry behind the delegations.

Each function edits the registry inside a `Change` (publisher.py) and marks what must be
re-published; it raises `ServiceError`s (4xx) for requests that cannot be applied, so the
whole change rolls back and nothing is published.

Who may do what (DESIGN.md section 7): without `admin=True` (a registrar token) a change
may only register a new feedstock, give it names nobody owns and its first key. Moving or
sharing an owned name, a glob that matches an owned name (or overlaps another feedstock's
glob), and a key for a feedstock that already has one need `admin=True`. A name is owned
by a feedstock that lists it or has a glob matching it. Every glob starts with a literal
prefix (`*` alone would claim every name), whoever adds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.service.db.models import Feedstock, FeedstockKey, FeedstockOutput
from signer.service.errors import BadRequest, Conflict, Forbidden, NotFound
from signer.service.publisher import Change
from signer.service.schemas import FeedstockView, KeyView
from signer.trust.errors import FormatError
from signer.trust.feedstocks import check_name
from signer.trust.keys import PublicKey
from signer.trust.timefmt import format_time

MAX_THRESHOLD = 16
FEEDSTOCK_SUFFIX = "-feedstock"
_WILDCARDS = "*?["
_SHOWN = 5  # conflicting names quoted in a refusal


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


def printable(text: str) -> bool:
    """Text the database can compare: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def glob_prefix(pattern: str) -> str:
    """The literal characters an fnmatch pattern starts with ("" for `*`, `?x`, `[ab]*`)."""
    cut = min((i for i, c in enumerate(pattern) if c in _WILDCARDS), default=len(pattern))
    return pattern[:cut]


def _names(values: Iterable[str], *, glob: bool) -> list[str]:
    out: list[str] = []
    for value in values:
        try:
            out.append(check_name(value, "outputs", "name", glob=glob))
        except FormatError as exc:
            raise BadRequest(exc.reason, code="invalid_name") from None
        if glob and not glob_prefix(value):
            raise BadRequest(
                f"glob {value!r} must start with a literal prefix (e.g. 'libfoo-*')",
                code="invalid_glob",
            )
    return sorted(set(out))


def parse_key(obj: Mapping[str, Any]) -> PublicKey:
    try:
        return PublicKey.from_dict(dict(obj), "key", "key")
    except FormatError as exc:
        raise BadRequest(f"{exc.field}: {exc.reason}", code="invalid_key") from None


def get_feedstock(session: Session, name: str) -> Feedstock:
    try:
        check_name(name, "feedstock", "name")
    except FormatError:
        raise NotFound(
            f"feedstock {name[:256]!r} is not registered", code="unknown_feedstock"
        ) from None
    feedstock = session.scalars(select(Feedstock).where(Feedstock.name == name)).first()
    if feedstock is None:
        raise NotFound(f"feedstock {name!r} is not registered", code="unknown_feedstock")
    return feedstock


def active_keys(feedstock: Feedstock) -> list[FeedstockKey]:
    return [k for k in feedstock.keys if k.revoked_at is None]


def view(feedstock: Feedstock) -> FeedstockView:
    active = active_keys(feedstock)
    return FeedstockView(
        name=feedstock.name,
        threshold=feedstock.threshold,
        delegated=len(active) >= feedstock.threshold,
        outputs=sorted(o.name for o in feedstock.outputs if not o.is_glob),
        output_globs=sorted(o.name for o in feedstock.outputs if o.is_glob),
        keys=[
            KeyView(
                keyid=k.keyid,
                key=json.loads(k.key_json),
                added_at=iso(k.added_at),
                revoked_at=iso(k.revoked_at) if k.revoked_at else None,
            )
            for k in sorted(feedstock.keys, key=lambda k: k.added_at)
        ],
    )


def find_view(session: Session, name: str) -> FeedstockView | None:
    try:
        return view(get_feedstock(session, name))
    except NotFound:
        return None


def list_views(session: Session, after: str, limit: int) -> list[FeedstockView]:
    """A page of feedstocks in name order, starting after `after`."""
    rows = session.scalars(
        select(Feedstock).where(Feedstock.name > after).order_by(Feedstock.name).limit(limit)
    ).all()
    return [view(f) for f in rows]


# ----------------------------------------------------------------------------- ownership


def _owners(session: Session, names: Iterable[str], exclude: int | None) -> dict[str, str]:
    """name -> another feedstock owning it (listing it, or a glob of its matching it)."""
    wanted = sorted(set(names))
    owners: dict[str, str] = {}
    for start in range(0, len(wanted), 5000):  # bounded IN lists (SQLite's variable limit)
        chunk = wanted[start : start + 5000]
        stmt = (
            select(FeedstockOutput.name, Feedstock.name)
            .join(Feedstock, Feedstock.id == FeedstockOutput.feedstock_id)
            .where(FeedstockOutput.is_glob.is_(False), FeedstockOutput.name.in_(chunk))
        )
        if exclude is not None:
            stmt = stmt.where(Feedstock.id != exclude)
        for name, owner in session.execute(stmt):
            owners.setdefault(name, owner)
    globs = _globs_of_others(session, exclude)
    for name in wanted:
        if name not in owners:
            matched = next((o for g, o in globs if fnmatchcase(name, g)), None)
            if matched is not None:
                owners[name] = matched
    return owners


def _globs_of_others(session: Session, exclude: int | None) -> list[tuple[str, str]]:
    stmt = (
        select(FeedstockOutput.name, Feedstock.name)
        .join(Feedstock, Feedstock.id == FeedstockOutput.feedstock_id)
        .where(FeedstockOutput.is_glob.is_(True))
    )
    if exclude is not None:
        stmt = stmt.where(Feedstock.id != exclude)
    return [(g, o) for g, o in session.execute(stmt)]


def _glob_conflicts(session: Session, pattern: str, exclude: int | None) -> list[tuple[str, str]]:
    """What `pattern` would take from other feedstocks: (name or glob, owner) pairs."""
    prefix = glob_prefix(pattern)
    stmt = (
        select(FeedstockOutput.name, Feedstock.name)
        .join(Feedstock, Feedstock.id == FeedstockOutput.feedstock_id)
        .where(FeedstockOutput.is_glob.is_(False))
        .where(FeedstockOutput.name.startswith(prefix, autoescape=True))
    )
    if exclude is not None:
        stmt = stmt.where(Feedstock.id != exclude)
    found = [(name, owner) for name, owner in session.execute(stmt) if fnmatchcase(name, pattern)]
    for other, owner in _globs_of_others(session, exclude):
        # Two patterns whose literal prefixes nest may match the same future names.
        other_prefix = glob_prefix(other)
        if prefix.startswith(other_prefix) or other_prefix.startswith(prefix):
            found.append((f"glob {other}", owner))
    return sorted(found)


def _refuse_owned(what: str, conflicts: Sequence[str]) -> None:
    shown = ", ".join(conflicts[:_SHOWN]) + (" …" if len(conflicts) > _SHOWN else "")
    raise Forbidden(
        f"{what} already owned by another feedstock: {shown}; moving or sharing a name "
        "needs a token with scope 'admin'",
        code="owned_name",
    )


def _check_claims(
    session: Session,
    names: Sequence[str],
    globs: Sequence[str],
    exclude: int | None,
) -> None:
    """A registrar may claim only names and globs nobody else owns."""
    owners = _owners(session, names, exclude)
    if owners:
        _refuse_owned("names", [f"{n} ({o})" for n, o in sorted(owners.items())])
    for pattern in globs:
        conflicts = _glob_conflicts(session, pattern, exclude)
        if conflicts:
            _refuse_owned(f"glob {pattern!r} matches", [f"{n} ({o})" for n, o in conflicts])


def iso(moment: datetime) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ` (the columns give aware datetimes: models.UTCDateTime)."""
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
    admin: bool = False,
) -> Feedstock:
    name = feedstock_name(name)
    parsed = [parse_key(k) for k in keys]
    _check_threshold(threshold)
    names, globs = _names(outputs, glob=False), _names(output_globs, glob=True)
    session = change.session
    if session.scalars(select(Feedstock.id).where(Feedstock.name == name)).first() is not None:
        raise Conflict(f"feedstock {name!r} is already registered")
    if not admin:
        _check_claims(session, names, globs, None)
    feedstock = Feedstock(name=name, threshold=threshold, created_at=change.now)
    session.add(feedstock)
    session.flush()
    _set_outputs(feedstock, names, glob=False, add=True)
    _set_outputs(feedstock, globs, glob=True, add=True)
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
    admin: bool = False,
) -> Feedstock:
    feedstock = get_feedstock(change.session, name)
    if not admin and (remove_outputs or remove_globs or threshold is not None):
        raise Forbidden("removing names or changing the threshold needs scope 'admin'")
    names, globs = _names(add_outputs, glob=False), _names(add_globs, glob=True)
    if not admin:
        _check_claims(change.session, names, globs, feedstock.id)
    _set_outputs(feedstock, _names(remove_outputs, glob=False), glob=False, add=False)
    _set_outputs(feedstock, _names(remove_globs, glob=True), glob=True, add=False)
    _set_outputs(feedstock, names, glob=False, add=True)
    _set_outputs(feedstock, globs, glob=True, add=True)
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


def add_key(
    change: Change, name: str, key_obj: Mapping[str, Any], *, admin: bool = False
) -> FeedstockKey:
    key = parse_key(key_obj)
    feedstock = get_feedstock(change.session, name)
    if feedstock.keys and not admin:
        # A registrar provisions the first key; any later one (a rotation, or a stolen
        # registrar token adding the attacker's key to a live feedstock) is an admin's call.
        raise Forbidden(
            f"feedstock {name!r} already has a key; adding another needs scope 'admin'",
            code="has_key",
        )
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


class _Ownership:
    """Who owns what before an import: names listed, and globs by their literal prefix."""

    def __init__(self, session: Session, names: Sequence[str]) -> None:
        self.listed: dict[str, set[str]] = {}
        wanted = sorted(set(names))
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start : start + 5000]
            for name, owner in session.execute(
                select(FeedstockOutput.name, Feedstock.name)
                .join(Feedstock, Feedstock.id == FeedstockOutput.feedstock_id)
                .where(FeedstockOutput.is_glob.is_(False), FeedstockOutput.name.in_(chunk))
            ):
                self.listed.setdefault(name, set()).add(owner)
        self.globs = _globs_of_others(session, None)
        self.by_prefix: dict[str, list[tuple[str, str]]] = {}
        for pattern, owner in self.globs:
            self.by_prefix.setdefault(glob_prefix(pattern), []).append((pattern, owner))
        self.lengths = sorted({len(p) for p in self.by_prefix})

    def other_owner(self, name: str, feedstock: str) -> str | None:
        others = self.listed.get(name, set()) - {feedstock}
        if others:
            return min(others)
        if feedstock in self.listed.get(name, set()):
            return None  # already this feedstock's: nothing is taken
        for length in self.lengths:
            for pattern, owner in self.by_prefix.get(name[:length], ()):
                if owner != feedstock and fnmatchcase(name, pattern):
                    return owner
        return None

    @staticmethod
    def glob_conflict(session: Session, pattern: str, feedstock: str) -> str | None:
        for what, owner in _glob_conflicts(session, pattern, None):
            if owner != feedstock:
                return f"{what} of {owner}"
        return None


def import_outputs(
    change: Change,
    outputs: Mapping[str, Sequence[str]],
    output_globs: Mapping[str, Sequence[str]],
    *,
    replace: bool,
    admin: bool = False,
) -> dict[str, Any]:
    """conda-forge's feedstock-outputs mapping (name -> feedstocks) and autoreg globs.

    Feedstocks not yet registered are created without keys (not delegated until a key is
    added). With `replace` (admin only), each feedstock named gets exactly the names given
    (others keep theirs); otherwise names are added. Feedstock names written as
    repositories (`vouch-feedstock`, as the real registry has some) are read without the
    suffix, and the answer says so. Without `admin`, entries that would take a name or
    glob another feedstock owns are left out and listed in `needs_admin`.
    """
    if replace and not admin:
        raise Forbidden("replacing names needs scope 'admin'")
    renamed: dict[str, str] = {}

    def fs_name(raw: str) -> str:
        if raw.endswith(FEEDSTOCK_SUFFIX) and len(raw) > len(FEEDSTOCK_SUFFIX):
            renamed[raw] = raw[: -len(FEEDSTOCK_SUFFIX)]
            return feedstock_name(renamed[raw])
        return feedstock_name(raw)

    by_feedstock: dict[str, set[str]] = {}
    for package, feedstocks in outputs.items():
        package = _names([package], glob=False)[0]
        for fs in feedstocks:
            by_feedstock.setdefault(fs_name(fs), set()).add(package)
    globs: dict[str, list[str]] = {}
    for fs, patterns in output_globs.items():
        globs.setdefault(fs_name(fs), []).extend(_names(patterns, glob=True))
    session = change.session
    needs_admin: list[str] = []
    if not admin:
        owned = _Ownership(session, sorted({p for ps in by_feedstock.values() for p in ps}))
        for fs, packages in by_feedstock.items():
            for package in sorted(packages):
                owner = owned.other_owner(package, fs)
                if owner is not None:
                    packages.discard(package)
                    needs_admin.append(f"{package} -> {fs} (owned by {owner})")
        for fs, patterns in globs.items():
            for pattern in list(patterns):
                conflict = owned.glob_conflict(session, pattern, fs)
                if conflict is not None:
                    patterns.remove(pattern)
                    needs_admin.append(f"glob {pattern} -> {fs} (matches {conflict})")
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
    if renamed:
        examples = ", ".join(f"{a} -> {b}" for a, b in sorted(renamed.items())[:_SHOWN])
        change.notes.append(
            f"{len(renamed)} feedstock name(s) given with the -feedstock suffix, read "
            f"without it: {examples}" + (" …" if len(renamed) > _SHOWN else "")
        )
    if needs_admin:
        change.notes.append(
            f"{len(needs_admin)} entr(ies) left out: they take names other feedstocks own "
            "(an admin token may import them)"
        )
    summary: dict[str, Any] = {
        "feedstocks": len(names),
        "created": created,
        "names": len(outputs),
        "globs": sum(len(g) for g in globs.values()),
        "normalized": len(renamed),
    }
    change.audit(
        "outputs.import",
        {**summary, "replace": replace, "left_out": len(needs_admin)},
    )
    return {**summary, "needs_admin": sorted(needs_admin)[:1000]}
