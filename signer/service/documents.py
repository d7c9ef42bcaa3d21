"""Reading the published trust repository from the database (the replicas' shared truth).

`TrustFiles` answers `/trust/<path>` through a short per-process cache; `DatabaseSource`
is the same documents as a `signer.client.TrustSource`, so the intake verifies through a
`TrustSession` exactly as clients do; `health_summary` is what `/healthz` reports. All
only read; publishing is `publisher.py`'s alone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select

from signer.service.db.models import Attestation, Document, Setting
from signer.service.db.session import Database
from signer.service.online_keys import CONFIG_SETTING
from signer.trust import layout
from signer.trust.errors import VerificationError

IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "public, max-age=60, must-revalidate"
ATTESTATION = "public, max-age=300"
SIDECAR_SUFFIX = layout.SIDECAR_SUFFIX
MAX_ENTRIES = 4096
MAX_PATH = 1024


class Found(NamedTuple):
    data: bytes
    etag: str
    cache_control: str


def valid_path(path: str) -> bool:
    """A path that could name a published file: anything else is not looked up at all.

    (PostgreSQL refuses a NUL inside a text parameter; control characters, surrogates and
    `..` never name a document either.)
    """
    if not path or len(path) > MAX_PATH:
        return False
    if any(ord(c) < 0x20 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


class TrustFiles:
    """Published bytes by path, read from the database through a short-lived cache."""

    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: OrderedDict[str, tuple[float, Found]] = OrderedDict()

    def cached(self, path: str) -> Found | None:
        entry = self._cache.get(path)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def load(self, path: str) -> Found | None:
        found = self._query(path)
        if found is not None and self.ttl > 0:
            self._cache[path] = (time.monotonic() + self.ttl, found)
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)
        return found

    def get(self, path: str) -> Found | None:
        return self.cached(path) or self.load(path)

    def invalidate(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._cache.pop(path, None)

    def _query(self, path: str) -> Found | None:
        if not valid_path(path):
            return None
        with self.db.connect() as conn:
            if path.startswith(layout.ATTESTATIONS_DIR + "/"):
                parts = path.split("/")
                if len(parts) != 3 or not parts[2].endswith(SIDECAR_SUFFIX):
                    return None
                filename = parts[2][: -len(SIDECAR_SUFFIX)]
                row = conn.execute(
                    select(Attestation.data, Attestation.data_sha256).where(
                        Attestation.subdir == parts[1], Attestation.filename == filename
                    )
                ).first()
                return Found(row[0], f'"{row[1]}"', ATTESTATION) if row else None
            row = conn.execute(
                select(Document.data, Document.sha256).where(Document.path == path)
            ).first()
            if row is None:
                return None
            cache = IMMUTABLE if layout.is_immutable(path) else MUTABLE
            return Found(row[0], f'"{row[1]}"', cache)


class DatabaseSource:
    """The published documents (roots, key_mgr, pkg_mgr, index, bins) as a TrustSource."""

    location = "the service database"

    def __init__(self, db: Database) -> None:
        self.db = db

    def fetch(self, path: str, max_bytes: int) -> bytes | None:
        if not valid_path(path) or path.startswith(layout.ATTESTATIONS_DIR + "/"):
            return None
        with self.db.connect() as conn:
            data = conn.scalar(select(Document.data).where(Document.path == path))
        if data is None:
            return None
        if len(data) > max_bytes:
            raise VerificationError(path, "size", f"over its size cap of {max_bytes} bytes")
        return bytes(data)

    def describe(self, path: str) -> str:
        return f"{path} (published in the service database)"


# What a verifier session depends on: when one of these changes, a new session is made.
_SESSION_DOCUMENTS = (layout.KEY_MGR, layout.PKG_MGR, layout.INDEX)


@dataclass(frozen=True)
class Published:
    """The oldest published root (the anchor) and the digests a session depends on."""

    anchor_path: str
    anchor: bytes
    fingerprint: tuple[tuple[str, str], ...]


def published_state(db: Database) -> Published | None:
    """None before `service init` published a root."""
    with db.connect() as conn:
        rows = conn.execute(
            select(Document.path, Document.sha256).where(
                Document.path.like(f"%{layout.ROOT_SUFFIX}") | Document.path.in_(_SESSION_DOCUMENTS)
            )
        ).all()
        roots = sorted(
            (version, p) for p, _ in rows if (version := layout.root_version(p)) is not None
        )
        if not roots:
            return None
        anchor_path = roots[0][1]
        anchor = conn.scalar(select(Document.data).where(Document.path == anchor_path))
    assert anchor is not None
    return Published(anchor_path, bytes(anchor), tuple(sorted((p, d) for p, d in rows)))


@dataclass(frozen=True)
class HealthSummary:
    initialized: bool
    root_version: int | None
    root_expires: str | None
    index_version: int | None


def health_summary(db: Database) -> HealthSummary:
    """Raises whatever the database raises: the caller reports it as not ready."""
    with db.connect() as conn:
        initialized = (
            conn.scalar(select(Setting.name).where(Setting.name == CONFIG_SETTING)) is not None
        )
        rows = conn.execute(
            select(Document.path, Document.version, Document.expiration).where(
                Document.path.like(f"%{layout.ROOT_SUFFIX}") | (Document.path == layout.INDEX)
            )
        ).all()
    roots = [(v, e) for p, v, e in rows if layout.is_root_path(p)]
    index = [v for p, v, _ in rows if p == layout.INDEX]
    newest = max(roots, default=None)
    return HealthSummary(
        initialized,
        newest[0] if newest else None,
        newest[1] if newest else None,
        index[0] if index else None,
    )
