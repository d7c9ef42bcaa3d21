"""Attestation intake (`POST /v1/attestations`): verify each sidecar, store it, publish it.

The signature is the credential: an artifact is accepted when its sidecar verifies
(section 4, rule 4) against the feedstock's delegation as currently published, checked
by a `signer.client.TrustSession` over the database (the same code and the same
documents a client verifies with: root chain, key_mgr, index, bin), its statement names
this file, hash and subdir, and its package name is in the feedstock's scope. Each
artifact gets its own verdict; one bad sidecar does not refuse the others.

Idempotent: the same sidecar again is `unchanged`; a different valid sidecar for the same
file and hash (a CI re-run, a new key after a revocation) is `replaced`; a different hash
under a file name already attested is refused (`conflict`: artifacts are immutable).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from signer.client import SessionConfig, TrustSession
from signer.service.db.models import Attestation, Feedstock
from signer.service.db.session import Database
from signer.service.documents import DatabaseSource, published_state
from signer.service.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    NotInitialized,
    RateLimited,
    TooLarge,
    Unavailable,
)
from signer.service.faults import crashpoint
from signer.service.publisher import Change, Publisher
from signer.service.ratelimit import TokenBuckets
from signer.trust.attestation import package_name_of, sidecar_file_bytes
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import check_name
from signer.trust.timefmt import system_clock

log = logging.getLogger("cf_sign.service")

# conda subdirs: noarch, linux-64, osx-arm64, win-64, emscripten-wasm32, ...
SUBDIR = re.compile(r"\A(noarch|[a-z0-9]+-[a-z0-9_]+)\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_FILENAME = re.compile(r"\A[!-~]{1,512}\Z")  # printable ASCII: what conda file names are


@dataclass
class Verdict:
    artifact: str
    accepted: bool
    status: str  # stored | unchanged | replaced | refused
    check: str | None = None
    reason: str | None = None
    keyids: tuple[str, ...] = ()
    package: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accepted": self.accepted, "status": self.status}
        if self.accepted:
            out["keyids"] = list(self.keyids)
            out["package"] = self.package
        else:
            out["check"] = self.check
            out["reason"] = self.reason
        return out


def refused(artifact: str, check: str, reason: str) -> Verdict:
    return Verdict(artifact, False, "refused", check, reason)


@dataclass
class _Row:
    subdir: str
    filename: str
    package: str
    sha256: str
    keyids: tuple[str, ...]
    data: bytes
    data_sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.data_sha256 = hashlib.sha256(self.data).hexdigest()


class Sessions:
    """The verifier session the intake judges by: `TrustSession` over the database.

    A session verifies the root chain (from the oldest published root, which `service
    init` checked and stored byte-identical), key_mgr, the index and each feedstock's bin
    once, and caches what it resolved. It is replaced when a root, key_mgr, pkg_mgr or the
    index changes (one small query per request tells), so a revoked key stops counting at
    the next request after its publication.
    """

    def __init__(self, db: Database, config: SessionConfig | None = None) -> None:
        self.db = db
        self.config = config
        self._lock = threading.Lock()
        self._current: tuple[tuple[tuple[str, str], ...], TrustSession] | None = None

    def current(self, *, fresh: bool = False) -> TrustSession | None:
        """None before the service is initialized."""
        published = published_state(self.db)
        if published is None:
            return None
        with self._lock:
            if not fresh and self._current and self._current[0] == published.fingerprint:
                return self._current[1]
            session = TrustSession(
                DatabaseSource(self.db),
                published.anchor,
                anchor_name=published.anchor_path,
                config=self.config,
            )
            self._current = (published.fingerprint, session)
            return session


@dataclass
class IntakeResult:
    feedstock: str
    verdicts: dict[str, Verdict]

    @property
    def accepted(self) -> int:
        return sum(v.accepted for v in self.verdicts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "feedstock": self.feedstock,
            "accepted": self.accepted,
            "refused": len(self.verdicts) - self.accepted,
            "artifacts": {k: v.to_json() for k, v in sorted(self.verdicts.items())},
        }


class Intake:
    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        limiter: TokenBuckets,
        *,
        max_artifacts: int = 500,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.limiter = limiter
        self.max_artifacts = max_artifacts
        self.sessions = Sessions(db)

    def session_for(self, feedstock: str) -> TrustSession:
        """A session in which `feedstock`'s published delegation verifies."""
        try:
            check_name(feedstock, "request", "feedstock")
        except FormatError as exc:
            raise BadRequest(f"feedstock: {exc.reason}", code="invalid_name") from None
        problem: VerificationError | None = None
        for fresh in (False, True):  # once more with a new session: a publication raced us
            session = self.sessions.current(fresh=fresh)
            if session is None:
                raise NotInitialized("the service is not initialized: run `cf-sign service init`")
            try:
                session.delegation(feedstock)
                return session
            except VerificationError as exc:
                problem = exc
                if exc.check == "delegation":
                    break
        assert problem is not None
        if problem.check == "delegation":
            with self.db.connect() as conn:
                known = conn.scalar(select(Feedstock.id).where(Feedstock.name == feedstock))
            if known is None:
                raise NotFound(
                    f"feedstock {feedstock!r} is not registered", code="unknown_feedstock"
                )
            raise Forbidden(
                f"feedstock {feedstock!r} has no active keys (not delegated)",
                code="not_delegated",
            )
        # The service's own published documents do not verify: nothing is accepted.
        log.error("published trust documents do not verify: %s", problem)
        raise Unavailable(f"the published delegations do not verify ({problem.check})")

    def submit(
        self, feedstock: str, artifacts: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> IntakeResult:
        """Verify and store `{"subdir/file": (sha256, sidecar)}` for `feedstock`."""
        if len(artifacts) > self.max_artifacts:
            raise TooLarge(
                f"{len(artifacts)} artifacts in one request; at most {self.max_artifacts}"
            )
        session = self.session_for(feedstock)
        wait = self.limiter.take(feedstock, len(artifacts))
        if wait > 0:
            raise RateLimited(
                f"feedstock {feedstock!r} is over its submission rate; retry in {wait:.0f} s",
                retry_after=wait,
            )
        verdicts: dict[str, Verdict] = {}
        rows: dict[str, _Row] = {}
        for key, (sha256, sidecar) in artifacts.items():
            outcome = self._check(feedstock, session, key, sha256, sidecar)
            if isinstance(outcome, Verdict):
                verdicts[key] = outcome
            else:
                rows[key] = outcome
        if rows:
            verdicts.update(self._store(feedstock, rows))
        return IntakeResult(feedstock, verdicts)

    def _check(
        self,
        feedstock: str,
        session: TrustSession,
        key: str,
        sha256: str,
        sidecar: Mapping[str, Any],
    ) -> Verdict | _Row:
        subdir, sep, filename = key.partition("/")
        if not sep or not SUBDIR.match(subdir) or not _FILENAME.match(filename) or "/" in filename:
            return refused(key, "artifact", "expected <subdir>/<file name>")
        if package_name_of(filename) is None:
            return refused(key, "artifact", "not a name-version-build.conda|.tar.bz2 file name")
        if not isinstance(sha256, str) or not _HEX64.match(sha256):
            return refused(key, "sha256", "expected 64 lowercase hex digits")
        hint = sidecar.get("feedstock")
        if hint != feedstock:
            return refused(
                key, "feedstock", f"the attestation names feedstock {hint!r}, not {feedstock!r}"
            )
        data = sidecar_file_bytes(sidecar)
        try:
            result = session.verify_attestation(
                data, filename=filename, sha256=sha256, subdir=subdir, where=f"{key}.sig.json"
            )
        except FormatError as exc:
            return refused(key, "format", f"{exc.field}: {exc.reason}" if exc.field else exc.reason)
        except VerificationError as exc:
            return refused(key, exc.check, exc.reason)
        return _Row(subdir, filename, result.package, sha256, result.keyids, data)

    def _store(self, feedstock: str, rows: Mapping[str, _Row]) -> dict[str, Verdict]:
        for attempt in range(3):
            try:
                verdicts, written = self._store_once(feedstock, rows, system_clock())
            except IntegrityError:
                # Someone stored one of these artifacts at the same moment: look again.
                if attempt == 2:
                    raise
                continue
            # A crash here (committed, file not written) is repaired by the next sync:
            # at start-up, in `service refresh`, and by every replica's periodic check.
            crashpoint("intake.after-commit")
            try:
                self.publisher.publish_attestations((r.subdir, r.filename) for r in written)
            except OSError as exc:
                # Stored and served from the database; the directory catches up later.
                log.error("could not write attestation files (the next sync will): %s", exc)
            return verdicts
        raise AssertionError("unreachable")

    def _store_once(
        self, feedstock: str, rows: Mapping[str, _Row], now: datetime
    ) -> tuple[dict[str, Verdict], list[_Row]]:
        verdicts: dict[str, Verdict] = {}
        written: list[_Row] = []
        names = sorted({r.filename for r in rows.values()})
        with self.db.write() as session, session.begin():
            existing = {
                (a.subdir, a.filename): a
                for a in session.scalars(select(Attestation).where(Attestation.filename.in_(names)))
            }
            for key, row in rows.items():
                old = existing.get((row.subdir, row.filename))
                accepted = Verdict(key, True, "stored", keyids=row.keyids, package=row.package)
                if old is None:
                    session.add(
                        Attestation(
                            subdir=row.subdir,
                            filename=row.filename,
                            feedstock=feedstock,
                            package=row.package,
                            sha256=row.sha256,
                            keyids=",".join(row.keyids),
                            data=row.data,
                            data_sha256=row.data_sha256,
                            submitted_at=now,
                        )
                    )
                    written.append(row)
                elif old.sha256 != row.sha256:
                    verdicts[key] = refused(
                        key,
                        "conflict",
                        f"{key} is already attested with sha256 {old.sha256[:16]}…; "
                        "a published file name never changes content",
                    )
                    continue
                elif old.data_sha256 == row.data_sha256:
                    accepted.status = "unchanged"
                else:
                    old.feedstock, old.package, old.keyids = (
                        feedstock,
                        row.package,
                        ",".join(row.keyids),
                    )
                    old.data, old.data_sha256, old.submitted_at = row.data, row.data_sha256, now
                    accepted.status = "replaced"
                    written.append(row)
                verdicts[key] = accepted
        return verdicts, written


@dataclass(frozen=True)
class Withdrawn:
    subdir: str
    filename: str
    feedstock: str
    sha256: str


def withdraw(change: Change, subdir: str, filename: str, reason: str) -> Withdrawn | None:
    """Remove an accepted attestation (audited); the caller then removes its file.

    For a sidecar filed to squat a name (under another subdir's path), or one attested
    by a key found compromised later: the artifact may then be attested again.
    """
    if not SUBDIR.match(subdir) or not _FILENAME.match(filename):
        return None
    row = change.session.scalars(
        select(Attestation).where(Attestation.subdir == subdir, Attestation.filename == filename)
    ).first()
    if row is None:
        return None
    gone = Withdrawn(row.subdir, row.filename, row.feedstock, row.sha256)
    change.session.delete(row)
    change.audit(
        "attestation.withdraw",
        {
            "artifact": f"{subdir}/{filename}",
            "feedstock": row.feedstock,
            "package": row.package,
            "sha256": row.sha256,
            "keyids": row.keyids.split(",") if row.keyids else [],
            "sidecar_sha256": row.data_sha256,
            "reason": reason,
        },
    )
    return gone
