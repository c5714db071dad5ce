"""Versions of mapping changes.

Revision ID: 0003_ops
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_ops"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mapping_config_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("mapping", "version", name="uq_mapping_config_version"),
    )
    op.create_index("ix_mapping_config_version_mapping", "mapping_config_version", ["mapping"])


def downgrade() -> None:
    op.drop_table("mapping_config_version")
