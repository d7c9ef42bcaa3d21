"""Document versions are 64-bit (DESIGN.md rule 11: a key_mgr compromise may have pushed
versions to 10^9 and beyond, and recovery resets from there).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (("documents", "version"), ("document_versions", "version"), ("audit_log", "seq"))


def upgrade() -> None:
    # SQLite's INTEGER already holds 64 bits (its column types are affinities): nothing to
    # rebuild there. PostgreSQL's INTEGER is 32-bit.
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in _COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in _COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
