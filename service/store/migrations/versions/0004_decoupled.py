"""Records left alone after their coupled record was deleted (remove-coupling), and the merge of the two
0003 branches.

Revision ID: 0004
Revises: 0003_jobs, 0003_ops
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = ("0003_jobs", "0003_ops")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decoupled_record",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("decoupled_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("mapping", "side", "record_id", name="uq_decoupled_record"),
    )


def downgrade() -> None:
    op.drop_table("decoupled_record")
