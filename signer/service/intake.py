"""Attestation intake (`POST /v1/attestations`): verify each sidecar, store it, publish it.

The signature is the credential: an artifact is accepted when its sidecar verifies
(section 4, rule 4) against the feedstock's delegation as currently published (the bin
in the database, so intake and verifiers judge by the same document), its statement
names this file and hash, and its package name is in the feedstock's scope. Each artifact
gets its own verdict; one bad sidecar does not refuse the others.

Idempotent: the same sidecar again is `unchanged`; a different valid sidecar for the same
file and hash (a CI re-run, a new key after a revocation) is `replaced`; a different hash
under a file name already attested is refused (`conflict`: artifacts are immutable).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from signer.service.db.models import Attestation, Document, Feedstock, Setting
from signer.service.db.session import Database
from signer.service.errors import BadRequest, Forbidden, NotFound, RateLimited, TooLarge
from signer.service.online_keys import CONFIG_SETTING, ServiceConfig
from signer.service.publisher import Publisher
from signer.service.ratelimit import TokenBuckets
from signer.trust.attestation import package_name_of, sidecar_file_bytes, verify_sidecar
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import (
    FeedstockBin,
    FeedstockDelegation,
    bin_id,
    bin_path,
    check_name,
    parse_bin,
)
from signer.trust.timefmt import system_clock

# conda subdirs: noarch, linux-64, osx-arm64, win-64, emscripten-wasm32, ...
SUBDIR = re.compile(r"\A(noarch|[a-z0-9]+-[a-z0-9_]+)\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


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


class DelegationCache:
    """feedstock -> delegation from the published bin; a bin is re-parsed when it changes."""

    def __init__(self) -> None:
        self._bins: int | None = None
        self._parsed: dict[str, tuple[str, FeedstockBin]] = {}
        self._lock = threading.Lock()

    def _bin_count(self, conn: Connection) -> int | None:
        if self._bins is None:
            text = conn.scalar(select(Setting.value).where(Setting.name == CONFIG_SETTING))
            if text is None:
                return None
            self._bins = ServiceConfig.from_json(text).bins  # fixed at init
        return self._bins

    def lookup(self, conn: Connection, feedstock: str) -> FeedstockDelegation | None:
        bins = self._bin_count(conn)
        if bins is None:
            return None
        path = bin_path(bin_id(feedstock, bins))
        digest = conn.scalar(select(Document.sha256).where(Document.path == path))
        if digest is None:
            return None
        with self._lock:
            cached = self._parsed.get(path)
        if cached is None or cached[0] != digest:
            data = conn.scalar(select(Document.data).where(Document.path == path))
            if data is None:
                return None
            shard, _ = parse_bin(data, path)
            cached = (hashlib.sha256(data).hexdigest(), shard)
            with self._lock:
                self._parsed[path] = cached
        return cached[1].delegations.get(feedstock)


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
        self.cache = DelegationCache()

    def delegation(self, feedstock: str) -> FeedstockDelegation:
        try:
            check_name(feedstock, "request", "feedstock")
        except FormatError as exc:
            raise BadRequest(f"feedstock: {exc.reason}", code="invalid_name") from None
        with self.db.connect() as conn:
            delegation = self.cache.lookup(conn, feedstock)
            if delegation is not None:
                return delegation
            known = conn.scalar(select(Feedstock.id).where(Feedstock.name == feedstock))
        if known is None:
            raise NotFound(f"feedstock {feedstock!r} is not registered", code="unknown_feedstock")
        raise Forbidden(
            f"feedstock {feedstock!r} has no active keys (not delegated)", code="not_delegated"
        )

    def submit(
        self, feedstock: str, artifacts: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> IntakeResult:
        """Verify and store `{"subdir/file": (sha256, sidecar)}` for `feedstock`."""
        if len(artifacts) > self.max_artifacts:
            raise TooLarge(
                f"{len(artifacts)} artifacts in one request; at most {self.max_artifacts}"
            )
        delegation = self.delegation(feedstock)
        wait = self.limiter.take(feedstock, len(artifacts))
        if wait > 0:
            raise RateLimited(
                f"feedstock {feedstock!r} is over its submission rate; retry in {wait:.0f} s",
                retry_after=wait,
            )
        verdicts: dict[str, Verdict] = {}
        rows: dict[str, _Row] = {}
        for key, (sha256, sidecar) in artifacts.items():
            outcome = self._check(feedstock, delegation, key, sha256, sidecar)
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
        delegation: FeedstockDelegation,
        key: str,
        sha256: str,
        sidecar: Mapping[str, Any],
    ) -> Verdict | _Row:
        subdir, sep, filename = key.partition("/")
        if not sep or not SUBDIR.match(subdir) or "/" in filename:
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
            result = verify_sidecar(
                data, filename, sha256, delegation, f"{key}.sig.json", subdir=subdir
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
            for row in written:
                self.publisher.write_attestation(row.subdir, row.filename, row.data)
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
