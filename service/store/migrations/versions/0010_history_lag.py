"""A write's lag in its history entry (`record_history.lag_ms`): the console's overview charts the last hour's
throughput and lag per mapping from the entries, which any api process can read (the lag histogram lives in the
workers' metrics).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_history") as batch:
        batch.add_column(sa.Column("lag_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("record_history") as batch:
        batch.drop_column("lag_ms")
