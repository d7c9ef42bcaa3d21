"""The service's tables (SQLAlchemy 2 typed models).

The database is the service's whole state: several API processes share it and agree.
Published documents are stored with their exact bytes, so `/trust` serves what was
signed and every process serves the same thing. Changing these models needs a new
migration in `signer/service/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAME_LEN = 256  # feedstock and package names (the trust core allows 1..256 characters)


class UTCDateTime(TypeDecorator[datetime]):
    """`TIMESTAMP WITH TIME ZONE` read back as an aware UTC datetime on every database
    (SQLite keeps no zone and hands naive values back; PostgreSQL keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Service-wide values fixed by `service init`: KEYREFs of the online keys, bins, ..."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Feedstock(Base):
    __tablename__ = "feedstocks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    threshold: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Roll-out stage (off | observe | enforce), migration 0004; see signer/service/stages.py.
    stage: Mapped[str] = mapped_column(String(16), default="off", server_default="off")
    stage_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    keys: Mapped[list[FeedstockKey]] = relationship(
        back_populates="feedstock", cascade="all, delete-orphan", lazy="selectin"
    )
    outputs: Mapped[list[FeedstockOutput]] = relationship(
        back_populates="feedstock", cascade="all, delete-orphan", lazy="selectin"
    )


class FeedstockKey(Base):
    """A feedstock's public key; revoked keys stay (a keyid is never registered twice)."""

    __tablename__ = "feedstock_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feedstock_id: Mapped[int] = mapped_column(
        ForeignKey("feedstocks.id", ondelete="CASCADE"), index=True
    )
    keyid: Mapped[str] = mapped_column(String(64), unique=True)
    key_json: Mapped[str] = mapped_column(Text)  # securesystemslib key dict
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    feedstock: Mapped[Feedstock] = relationship(back_populates="keys")


class FeedstockOutput(Base):
    """A package name (or, with `is_glob`, an fnmatch pattern) a feedstock may publish."""

    __tablename__ = "feedstock_outputs"

    feedstock_id: Mapped[int] = mapped_column(
        ForeignKey("feedstocks.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    is_glob: Mapped[bool] = mapped_column(Boolean, primary_key=True)

    feedstock: Mapped[Feedstock] = relationship(back_populates="outputs")


class Attestation(Base):
    """An accepted sidecar, served as `attestations/<subdir>/<filename>.sig.json`."""

    __tablename__ = "attestations"
    __table_args__ = (UniqueConstraint("subdir", "filename", name="uq_attestation_artifact"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subdir: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(512))
    feedstock: Mapped[str] = mapped_column(String(NAME_LEN), index=True)
    package: Mapped[str] = mapped_column(String(NAME_LEN))
    sha256: Mapped[str] = mapped_column(String(64))  # of the artifact
    keyids: Mapped[str] = mapped_column(Text)  # comma-separated, the keys that signed
    data: Mapped[bytes] = mapped_column(LargeBinary)  # the sidecar as served
    data_sha256: Mapped[str] = mapped_column(String(64))  # ETag
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Document(Base):
    """The current bytes of a published trust document (roots, key_mgr, pkg_mgr, feedstocks)."""

    __tablename__ = "documents"

    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)  # 64-bit: migration 0002
    sha256: Mapped[str] = mapped_column(String(64))
    expiration: Mapped[str] = mapped_column(String(20))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DocumentVersion(Base):
    """Every version ever published: (path, version) is unique, so two different documents
    can never be published under the same version, whichever process publishes."""

    __tablename__ = "document_versions"

    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Token(Base):
    """A bearer token: only the SHA-256 of the secret is kept."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(128))  # space-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditEntry(Base):
    """One change; `entry_hash` commits to the entry and to `prev_hash` (see audit.py)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class Channel(Base):
    """A signed overlay channel (section 10): the service signs its attested records and
    publishes `channels/<name>/<subdir>/repodata.json`; the artifacts stay upstream."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(256))

    subdirs: Mapped[list[ChannelSubdir]] = relationship(
        back_populates="channel",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ChannelSubdir.subdir",
    )


class ChannelSubdir(Base):
    """One subdir of an overlay: its upstream repodata URL(s) and the last refresh's figures
    (written by whichever replica refreshed last; `/metrics` reports them)."""

    __tablename__ = "channel_subdirs"

    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    subdir: Mapped[str] = mapped_column(String(64), primary_key=True)
    upstream: Mapped[str] = mapped_column(String(2048))
    current_upstream: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    records: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attested: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    observed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    unattested: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refused: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lag_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    channel: Mapped[Channel] = relationship(back_populates="subdirs")
