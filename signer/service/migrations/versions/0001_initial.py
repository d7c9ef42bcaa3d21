"""Initial schema: settings, feedstocks, keys, outputs, attestations, documents, tokens, audit.

Revision ID: 0001
Revises:
Create Date: 2024-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)

# The audit log is append-only in the database itself: an UPDATE, DELETE or TRUNCATE fails
# (someone with the rights to drop the triggers is caught by `cf-sign service audit verify`).
_PG_AUDIT = [
    """CREATE FUNCTION cf_sign_audit_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION cf_sign_audit_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION cf_sign_audit_append_only()""",
]
_SQLITE_AUDIT = [
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "feedstocks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "feedstock_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "feedstock_id",
            sa.Integer(),
            sa.ForeignKey("feedstocks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("keyid", sa.String(64), nullable=False, unique=True),
        sa.Column("key_json", sa.Text(), nullable=False),
        sa.Column("added_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
    )
    op.create_table(
        "feedstock_outputs",
        sa.Column(
            "feedstock_id",
            sa.Integer(),
            sa.ForeignKey("feedstocks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("is_glob", sa.Boolean(), primary_key=True),
    )
    op.create_table(
        "attestations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subdir", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("feedstock", sa.String(256), nullable=False, index=True),
        sa.Column("package", sa.String(256), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("keyids", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("data_sha256", sa.String(64), nullable=False),
        sa.Column("submitted_at", _TS, nullable=False),
        sa.UniqueConstraint("subdir", "filename", name="uq_attestation_artifact"),
    )
    op.create_table(
        "documents",
        sa.Column("path", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("expiration", sa.String(20), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("published_at", _TS, nullable=False),
    )
    op.create_table(
        "document_versions",
        sa.Column("path", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("published_at", _TS, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    )
    dialect = op.get_bind().dialect.name
    for statement in _PG_AUDIT if dialect == "postgresql" else _SQLITE_AUDIT:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    for table in (
        "audit_log",
        "tokens",
        "document_versions",
        "documents",
        "attestations",
        "feedstock_outputs",
        "feedstock_keys",
        "feedstocks",
        "settings",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cf_sign_audit_append_only()")
