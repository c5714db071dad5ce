"""Reconciliations as leased jobs (`reconcile_job`): a collection notification or a catch-up's "read
everything" is stored and acknowledged at once, and a worker runs it with a lease and reports its progress.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_job",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_key", sa.String(400), nullable=False, unique=True),
        sa.Column("mapping", sa.String(64), nullable=False, index=True),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("filter", sa.Text(), nullable=True),
        sa.Column("full", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("listed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("checked", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("correlation_id", sa.String(200), nullable=True),
        sa.Column("message", sa.String(2000), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("reconcile_job")
