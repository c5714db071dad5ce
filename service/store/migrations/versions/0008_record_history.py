"""The per-record history (`record_history`): one entry per run of a record, what it served, decided and
changed; read by the admin API, pruned by age.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("bc_id", sa.String(64), nullable=True),
        sa.Column("dataverse_id", sa.String(64), nullable=True),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("search", sa.Text(), nullable=True),
    )
    op.create_index("ix_record_history_bc", "record_history", ["mapping", "bc_id"])
    op.create_index("ix_record_history_dataverse", "record_history", ["mapping", "dataverse_id"])
    op.create_index("ix_record_history_at", "record_history", ["at"])


def downgrade() -> None:
    op.drop_index("ix_record_history_at", table_name="record_history")
    op.drop_index("ix_record_history_dataverse", table_name="record_history")
    op.drop_index("ix_record_history_bc", table_name="record_history")
    op.drop_table("record_history")
