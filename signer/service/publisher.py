"""Serialized publication: the only code that signs and publishes trust documents.

Every change runs as `with publisher.change(actor) as change:`:

1. take the publication lock (db/session.py), so one change at a time across processes;
2. the caller edits the registry in `change.session` and says what it touched;
3. on leaving the block, the documents that changed are re-made and signed: the feedstock
   bins and index through `signer.feedstock.publish.plan_publication_detailed` (reading the
   published documents from the database), key_mgr.json when its keys change, each with
   its version bumped from the one in the database; every new (path, version) is also
   recorded in `document_versions`, whose primary key makes a second, different document
   under the same version impossible;
4. the audit entries are appended, and everything commits in one transaction;
5. still under the lock, the new files are written to the publish directory (temp file,
   fsync, rename; roots, key_mgr, pkg_mgr, bins, the index last) as a new snapshot, which
   the directory is then switched to at once (publish_dir.py). A crash leaves the previous
   consistent set on disk, and the database (what `/trust` serves) never shows a half-made
   change. `sync_files` (at start-up, and in `service refresh`) repairs a lagging directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.feedstock.publish import plan_publication_detailed
from signer.keys import KeyHandle
from signer.service import audit
from signer.service.db.models import (
    Attestation,
    Document,
    DocumentVersion,
    Feedstock,
    FeedstockKey,
    FeedstockOutput,
)
from signer.service.db.session import Database
from signer.service.faults import crashpoint
from signer.service.online_keys import OnlineKeys, ServiceConfig, load_config, require_config
from signer.service.publish_dir import PublishDir
from signer.storage.azblob import BlobTarget
from signer.trust import layout
from signer.trust.errors import FormatError
from signer.trust.feedstocks import INDEX_PATH, FeedstockDelegation
from signer.trust.keys import PublicKey
from signer.trust.metadata import Delegation, KeyMgr, PkgMgr, Root, Signable, parse_metadata
from signer.trust.signing import sign_envelope
from signer.trust.timefmt import expiry_after, format_time, parse_time, system_clock

log = logging.getLogger("cf_sign.service")

ROOT_WARNING = timedelta(days=30)
KEY_MGR_PATH = layout.KEY_MGR
PKG_MGR_PATH = layout.PKG_MGR
root_path = layout.root_path
write_rank = layout.write_rank  # roots (in version order), key_mgr, pkg_mgr, bins, the index
attestation_path = layout.attestation_path


def _signed_info(data: bytes, path: str) -> tuple[int, str]:
    """(version, expiration) of a published document."""
    obj = json.loads(data)
    signed = obj["signed"]
    return int(signed["version"]), str(signed["expiration"])


def _sign(signed: dict[str, Any], source: str, signers: Sequence[KeyHandle]) -> bytes:
    envelope = Signable(signed, {}, source)
    for signer in signers:
        sign_envelope(envelope, signer.channel_signer())  # raw: conda rejects OpenPGP here
    return envelope.to_bytes()


def newest_root_meta(session: Session) -> Root | None:
    rows = session.execute(
        select(Document.path, Document.data).where(Document.path.like("%.root.json"))
    )
    newest = max(((int(p.split(".", 1)[0]), p, d) for p, d in rows), default=None)
    if newest is None:
        return None
    meta = parse_metadata(newest[2], newest[1], "root").meta
    assert isinstance(meta, Root)
    return meta


def load_delegations(session: Session) -> tuple[dict[str, FeedstockDelegation], dict[str, str]]:
    """Delegations of every feedstock that can sign, and why the others cannot.

    Plain column queries, not ORM objects: at conda-forge's size (tens of thousands of
    feedstocks) this runs on every change, inside the publication lock.
    """
    keys: dict[int, list[PublicKey]] = {}
    for feedstock_id, key_json in session.execute(
        select(FeedstockKey.feedstock_id, FeedstockKey.key_json).where(
            FeedstockKey.revoked_at.is_(None)
        )
    ):
        obj = json.loads(key_json)  # validated when it was registered
        key = PublicKey(obj["keytype"], obj["scheme"], obj["keyval"]["public"])
        keys.setdefault(feedstock_id, []).append(key)
    names: dict[int, tuple[list[str], list[str]]] = {}
    for feedstock_id, name, is_glob in session.execute(
        select(FeedstockOutput.feedstock_id, FeedstockOutput.name, FeedstockOutput.is_glob)
    ):
        names.setdefault(feedstock_id, ([], []))[1 if is_glob else 0].append(name)
    delegations: dict[str, FeedstockDelegation] = {}
    left_out: dict[str, str] = {}
    for feedstock_id, name, threshold in session.execute(
        select(Feedstock.id, Feedstock.name, Feedstock.threshold).order_by(Feedstock.name)
    ):
        active = keys.get(feedstock_id, [])
        if len(active) < threshold:
            left_out[name] = f"{len(active)} active key(s), threshold {threshold}: not delegated"
            continue
        outputs, globs = names.get(feedstock_id, ([], []))
        delegations[name] = FeedstockDelegation.of(
            active, threshold, sorted(outputs), sorted(globs)
        )
    return delegations, left_out


@dataclass
class Change:
    """What one locked transaction changes; filled by the caller, finished by the publisher."""

    session: Session
    actor: str
    now: datetime
    delegations_changed: bool = False
    key_mgr_changed: bool = False
    refresh_within: timedelta | None = None  # re-sign documents expiring sooner than this
    new_roots: list[bytes] = field(default_factory=list)
    published: dict[str, int] = field(default_factory=dict)  # path -> version
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _audit: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)

    def audit(
        self, action: str, detail: Mapping[str, Any], *, only_if_published: bool = False
    ) -> None:
        """Log `action` when the change commits (with what it published)."""
        self._audit.append((action, dict(detail), only_if_published))

    def store(self, path: str, data: bytes) -> int:
        """Record a new version of `path` (in this transaction) and return its version."""
        version, expiration = _signed_info(data, path)
        current = self.session.get(Document, path)
        if current is not None and version <= current.version:
            raise RuntimeError(f"{path}: version {version} is not above {current.version}")
        digest = hashlib.sha256(data).hexdigest()
        # A duplicate (path, version) fails the insert: never two documents, one version.
        self.session.add(
            DocumentVersion(path=path, version=version, sha256=digest, published_at=self.now)
        )
        if current is None:
            self.session.add(
                Document(
                    path=path,
                    version=version,
                    sha256=digest,
                    expiration=expiration,
                    data=data,
                    published_at=self.now,
                )
            )
        else:
            current.version, current.sha256, current.data = version, digest, data
            current.expiration, current.published_at = expiration, self.now
        self.published[path] = version
        self.files[path] = data
        return version


class Publisher:
    def __init__(
        self,
        db: Database,
        publish_dir: Path,
        keys: OnlineKeys | None = None,
        publish_to: str | None = None,
    ) -> None:
        self.db = db
        self.publish_dir = publish_dir
        self.files = PublishDir(publish_dir)
        # Further targets (Blob Storage) get every file after the publish directory does;
        # one that fails is caught up by `sync_files` (refresh), as a lagging directory is.
        self.targets: list[BlobTarget] = [BlobTarget(publish_to)] if publish_to else []
        self.keys = keys or OnlineKeys()
        # (snapshot, path -> sha256) of the publish directory as this process last saw it.
        self._digests: tuple[Path, dict[str, str]] | None = None
        # Called with the paths of each publication, once committed (e.g. to drop caches).
        self.listeners: list[Callable[[Iterable[str]], None]] = []

    def _notify(self, paths: Iterable[str]) -> None:
        for listener in self.listeners:
            listener(list(paths))

    # ------------------------------------------------------------------ the locked change

    @contextmanager
    def change(self, actor: str, *, needs_config: bool = True) -> Iterator[Change]:
        with self.db.publication_lock() as conn:
            session = Session(bind=conn, expire_on_commit=False)
            try:
                change = Change(session, actor, system_clock().replace(microsecond=0))
                if needs_config:
                    require_config(session)
                yield change
                self._finish(change)
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
            self._notify(change.files)
            # A crash here leaves the previous snapshot in place; the next publication,
            # start-up or `service refresh` (sync_files) writes what was committed.
            crashpoint("publish.after-commit")
            if change.files:
                # Still under the lock: no other process writes files in between. The new
                # snapshot gets every document that differs from the database, not only this
                # change's: an earlier publication cut short by a crash (or made by a
                # replica with another directory) would otherwise leave this new index
                # next to a bin older than the one it names.
                with Session(bind=conn) as fresh:
                    lagging = self._lagging(fresh, trust_cache=True)
                    fresh.rollback()
                self.write_files({**lagging, **change.files})

    def _finish(self, change: Change) -> None:
        session = change.session
        # Without a config (tokens made before `service init`) there is nothing to sign.
        config = load_config(session)
        if config is not None:
            for data in change.new_roots:
                meta = parse_metadata(data, "root", "root").meta
                change.store(root_path(meta.version), data)
            signers = self.keys.signers(config.key_mgr_keyrefs)
            self._key_mgr_documents(change, config, signers)
            if change.delegations_changed or change.refresh_within is not None:
                self._delegations(change, config, signers)
        for action, detail, only_if_published in change._audit:
            if only_if_published and not change.published:
                continue
            if change.published:
                detail = {**detail, "published": dict(sorted(change.published.items()))}
            audit.append(session, change.actor, action, detail)

    def _key_mgr_documents(
        self, change: Change, config: ServiceConfig, signers: list[KeyHandle]
    ) -> None:
        session, now = change.session, change.now
        stamp, expires = format_time(now), expiry_after(config.expires_days, now)
        pkg_signers = self.keys.signers(config.pkg_mgr_keyrefs)
        wanted_keys = {s.public_key_hex for s in signers}
        for path, role_signers in ((KEY_MGR_PATH, signers), (PKG_MGR_PATH, pkg_signers)):
            current = session.get(Document, path)
            reason = "new" if current is None else None
            if current is not None and path == KEY_MGR_PATH and change.key_mgr_changed:
                reason = "pkg_mgr keys changed"
            if current is not None and reason is None:
                signed_by = set(json.loads(current.data)["signatures"])
                want = (
                    wanted_keys if path == KEY_MGR_PATH else {s.public_key_hex for s in pkg_signers}
                )
                if signed_by != want:
                    reason = "signed by other keys"
                elif (
                    change.refresh_within is not None
                    and parse_time(current.expiration, path, "expiration")
                    < now + change.refresh_within
                ):
                    reason = f"expires {current.expiration}"
            if reason is None:
                continue
            version = (current.version if current else 0) + 1
            meta: KeyMgr | PkgMgr
            if path == KEY_MGR_PATH:
                pubkeys = tuple(s.public_key_hex for s in pkg_signers)
                delegation = Delegation(pubkeys, config.pkg_mgr_threshold)
                meta = KeyMgr(version, stamp, expires, {"pkg_mgr": delegation})
            else:
                meta = PkgMgr(version, stamp, expires, {})
            change.store(path, _sign(meta.to_signed(), path, role_signers))
            change.notes.append(f"{path} v{version} ({reason})")

    def _delegations(self, change: Change, config: ServiceConfig, signers: list[KeyHandle]) -> None:
        session = change.session
        delegations, left_out = load_delegations(session)
        existing = {
            path: data
            for path, data in session.execute(
                select(Document.path, Document.data).where(Document.path.like("feedstocks/%"))
            )
        }

        def fetch_existing(path: str, max_bytes: int) -> bytes | None:
            data = existing.get(path)
            if data is not None and len(data) > max_bytes:
                raise FormatError(path, "", "published document over its size cap")
            return data

        within = change.refresh_within
        plan = plan_publication_detailed(
            delegations,
            fetch_existing,
            signers,
            bins=config.bins,
            expires_days=config.expires_days,
            now=change.now,
            # Outside a refresh, re-sign only what is inside the default half-life window.
            refresh_days=within.total_seconds() / 86400 if within is not None else None,
        )
        for path in sorted(plan.files, key=write_rank):
            change.store(path, plan.files[path])
        for bin_name, reason in sorted(plan.changed_bins.items()):
            change.notes.append(f"feedstocks/{bin_name}.json ({reason})")
        if plan.index_reason:
            change.notes.append(f"{INDEX_PATH} v{plan.index_version} ({plan.index_reason})")
        for name, why in sorted(left_out.items()):
            change.notes.append(f"feedstock {name}: {why}")

    # ------------------------------------------------------------------ files

    def write_files(self, files: Mapping[str, bytes], *, targets: bool = True) -> None:
        before = self._digests
        target = self.files.publish(files, order=write_rank)
        if files and target is not None and before is not None:
            digests = dict(before[1])
            digests.update((p, hashlib.sha256(d).hexdigest()) for p, d in files.items())
            self._digests = (target.resolve(), digests)
        elif files:
            self._digests = None
        if targets and files:
            for blob in self.targets:
                self._to_target(blob, lambda t: t.publish(files, order=write_rank))

    @staticmethod
    def _to_target(target: BlobTarget, write: Callable[[BlobTarget], object]) -> None:
        try:
            write(target)
        except FormatError as exc:  # the database has it: the next refresh writes it there
            log.warning(
                "publishing to %s failed (refresh will retry): %s", target.location.url, exc
            )

    def _disk_digests(self, paths: Iterable[str], *, trust_cache: bool) -> dict[str, str]:
        """sha256 of each document in the current snapshot (snapshots never change once
        made, so a snapshot this process made or read before is not read again)."""
        current = self.files.current()
        cached = self._digests
        if trust_cache and current is not None and cached is not None and cached[0] == current:
            return cached[1]
        digests: dict[str, str] = {}
        for path in paths:
            data = self.files.read(path)
            if data is not None:
                digests[path] = hashlib.sha256(data).hexdigest()
        self._digests = (current, digests) if current is not None else None
        return digests

    def _lagging(self, session: Session, *, trust_cache: bool) -> dict[str, bytes]:
        """The documents whose file is missing or differs from the database."""
        wanted = {p: d for p, d in session.execute(select(Document.path, Document.sha256))}
        on_disk = self._disk_digests(wanted, trust_cache=trust_cache)
        stale = sorted(p for p, d in wanted.items() if on_disk.get(p) != d)
        out: dict[str, bytes] = {}
        for start in range(0, len(stale), 500):
            chunk = stale[start : start + 500]
            for path, data in session.execute(
                select(Document.path, Document.data).where(Document.path.in_(chunk))
            ):
                out[path] = bytes(data)
        return out

    def publish_attestations(self, artifacts: Iterable[tuple[str, str]]) -> list[str]:
        """Make the files of these `(subdir, filename)` match the database (write or remove).

        Under the publish directory's attestation lock, each file gets what the database
        holds *now*, not what the caller stored: two submissions racing for one artifact
        (or a sync racing a submission) end with the newest committed sidecar on disk,
        whichever writes last. Returns the paths changed.
        """
        wanted = sorted(set(artifacts))
        if not wanted:
            return []
        paths = [attestation_path(subdir, filename) for subdir, filename in wanted]
        self._notify(paths)
        changed: list[str] = []
        with self.files.attestation_lock():
            current = self._attestation_rows(wanted)
            for (subdir, filename), path in zip(wanted, paths, strict=True):
                data = current.get((subdir, filename))
                if data is None:
                    if self.files.remove_attestation(path):
                        changed.append(path)
                    for blob in self.targets:
                        self._to_target(blob, partial(BlobTarget.remove_attestation, relpath=path))
                elif self.files.read_attestation(path) != data:
                    self.files.write_attestation(path, data)
                    changed.append(path)
                    write = partial(BlobTarget.write_attestation, relpath=path, data=data)
                    for blob in self.targets:
                        self._to_target(blob, write)
        return changed

    def _attestation_rows(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        out: dict[tuple[str, str], bytes] = {}
        with self.db.connect() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                names = sorted({f for _, f in chunk})
                for subdir, filename, data in conn.execute(
                    select(Attestation.subdir, Attestation.filename, Attestation.data).where(
                        Attestation.filename.in_(names)
                    )
                ):
                    out[(subdir, filename)] = bytes(data)
        return out

    def remove_attestation(self, subdir: str, filename: str) -> None:
        """After a withdrawal: the file goes (unless the artifact was attested again)."""
        self.publish_attestations([(subdir, filename)])

    def sync_recent_attestations(self, since: datetime, audit_after: int) -> tuple[list[str], int]:
        """The periodic check between replicas: attestations submitted since `since`, and
        those withdrawn in audit entries after `audit_after` (returned: the newest seen)."""
        with self.db.read() as session:
            head = audit.head_seq(session)
            touched = audit.withdrawals_after(session, audit_after)
            touched += [
                (a, b)
                for a, b in session.execute(
                    select(Attestation.subdir, Attestation.filename).where(
                        Attestation.submitted_at >= since
                    )
                )
            ]
        return self.publish_attestations(touched), head

    def sync_attestations(self) -> list[str]:
        """Repair every attestation file, and remove the files of withdrawn ones."""
        changed: list[str] = []
        with self.files.attestation_lock():
            known: set[str] = set()
            stale: list[tuple[str, str]] = []
            with self.db.connect() as conn:
                rows = conn.execution_options(yield_per=2000).execute(
                    select(Attestation.subdir, Attestation.filename, Attestation.data_sha256)
                )
                for subdir, filename, digest in rows:
                    path = attestation_path(subdir, filename)
                    known.add(path)
                    on_disk = self.files.read_attestation(path)
                    if on_disk is None or hashlib.sha256(on_disk).hexdigest() != digest:
                        stale.append((subdir, filename))
            current = self._attestation_rows(stale)
            for key in stale:
                data = current.get(key)
                if data is not None:
                    path = attestation_path(*key)
                    self.files.write_attestation(path, data)
                    changed.append(path)
            for path in self.files.attestation_files():
                if path not in known and self.files.remove_attestation(path):
                    changed.append(path)  # withdrawn (or never stored): not served any more
        if changed:
            self._notify(changed)
        return changed

    def refresh(self, within: timedelta | None = None, *, actor: str = "refresh") -> Change:
        """Re-sign online documents expiring within `within` (default: half their life)."""
        with self.change(actor) as change:
            config = require_config(change.session)
            change.refresh_within = within or timedelta(days=config.expires_days / 2)
            change.audit(
                "documents.refresh",
                {"within_days": change.refresh_within.total_seconds() / 86400},
                only_if_published=True,
            )
            root = newest_root_meta(change.session)
            if root is not None and root.expires < change.now + ROOT_WARNING:
                change.notes.append(
                    f"root v{root.version} expires {root.expiration}: it is signed offline, "
                    "so hold a root signing event (N+1.root.json) before then"
                )
        return change

    def sync_files(self, *, attestations: bool = True, trust_cache: bool = False) -> list[str]:
        """Write every document whose file is missing or differs (a lagging directory),
        as one new snapshot, then repair the attestation files (`sync_attestations`).

        `trust_cache`: skip re-reading a snapshot this process already knows (the
        periodic check); otherwise every file is read (start-up, `service refresh`).
        """
        with self.db.publication_lock() as conn, Session(bind=conn) as session:
            stale = self._lagging(session, trust_cache=trust_cache)
            session.rollback()
            self.write_files(stale, targets=False)
            # Blob Storage: documents missing there or older (conditional writes keep a newer
            # one that another replica already wrote).
            every = (
                {path: data for path, data in session.execute(select(Document.path, Document.data))}
                if self.targets
                else {}
            )
            for target in self.targets:
                wrote = target.publish(every, order=write_rank)
                stale.update({o.path: every[o.path] for o in wrote if o.action == "written"})
        written = sorted(stale, key=write_rank)
        if attestations:
            written += self.sync_attestations()
        return written
