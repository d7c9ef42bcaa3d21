"""Signed overlay channels: their subdirs, upstream URLs and last refresh status.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "channel_subdirs",
        sa.Column(
            "channel_id",
            sa.Integer(),
            sa.ForeignKey("channels.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("subdir", sa.String(64), primary_key=True),
        sa.Column("upstream", sa.String(2048), nullable=False),
        sa.Column("current_upstream", sa.String(2048), nullable=True),
        sa.Column("refreshed_at", _TS, nullable=True),
        sa.Column("published_at", _TS, nullable=True),
        sa.Column("records", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("attested", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("observed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("unattested", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("refused", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("lag_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("channel_subdirs")
    op.drop_table("channels")
