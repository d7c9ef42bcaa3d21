"""Online root signing events and their detached signatures.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signing_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("signed_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("proposed", sa.LargeBinary(), nullable=False),
        sa.Column("previous", sa.LargeBinary(), nullable=False),
        sa.Column("holders_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("published_at", _TS, nullable=True),
    )
    op.create_table(
        "signing_event_signatures",
        sa.Column(
            "event_id",
            sa.Integer(),
            sa.ForeignKey("signing_events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("signature_json", sa.Text(), nullable=False),
        sa.Column("added_at", _TS, nullable=False),
        sa.Column("added_by", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signing_event_signatures")
    op.drop_table("signing_events")
