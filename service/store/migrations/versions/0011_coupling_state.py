"""Couplings remember what each side held after the last run (`bc_state`, `dataverse_state`: the written fields
and the record's ETag) and the BC record's code (`bc_key`): writes go out without reading the record first, and
lookups by code (currency, salesperson, unit of measure) read the coupling instead of Business Central.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("coupling") as batch:
        batch.add_column(sa.Column("bc_state", sa.Text(), nullable=True))
        batch.add_column(sa.Column("dataverse_state", sa.Text(), nullable=True))
        batch.add_column(sa.Column("bc_key", sa.String(length=100), nullable=True))
    op.create_index("ix_coupling_bc_key", "coupling", ["mapping", "bc_key"])


def downgrade() -> None:
    op.drop_index("ix_coupling_bc_key", table_name="coupling")
    with op.batch_alter_table("coupling") as batch:
        batch.drop_column("bc_key")
        batch.drop_column("dataverse_state")
        batch.drop_column("bc_state")
