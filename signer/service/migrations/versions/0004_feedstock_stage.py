"""Each feedstock's roll-out stage: off, observe or enforce (default off), and since when.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedstocks") as batch:
        batch.add_column(sa.Column("stage", sa.String(16), nullable=False, server_default="off"))
        batch.add_column(sa.Column("stage_since", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(
            "ck_feedstocks_stage", "stage IN ('off', 'observe', 'enforce')"
        )


def downgrade() -> None:
    with op.batch_alter_table("feedstocks") as batch:
        batch.drop_constraint("ck_feedstocks_stage", type_="check")
        batch.drop_column("stage_since")
        batch.drop_column("stage")
