"""The side(s) the last run of a coupling wrote (`coupling.written`): the record history tells our own write's
echo from a change that carried nothing new.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("coupling") as batch:
        batch.add_column(sa.Column("written", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coupling") as batch:
        batch.drop_column("written")
