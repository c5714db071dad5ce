"""Background jobs: full synchronization runs and lines, catch-up state, webhook registration state.

A branch of its own beside the operations migrations (both revise 0002; `upgrade heads` applies both).

Revision ID: 0003_jobs
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_jobs"
down_revision = "0002"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "full_sync_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        _when("created_at", False), _when("finished_at"),
    )
    op.create_table(
        "full_sync_line",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("depends_on", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("recommendation", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False, server_default="ready"),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("owner", sa.String(64)),
        _when("lease_until"), _when("started_at"), _when("finished_at"), _when("updated_at"),
        sa.Column("message", sa.String(2000)),
        *(sa.Column(c, sa.Integer(), nullable=False, server_default="0")
          for c in ("inserted", "modified", "unchanged", "skipped", "failed", "coupled", "deleted")),
        sa.UniqueConstraint("run_id", "mapping", name="uq_full_sync_line"),
    )
    op.create_index("ix_full_sync_line_run_id", "full_sync_line", ["run_id"])
    op.create_table(
        "catch_up",
        sa.Column("mapping", sa.String(64), primary_key=True),
        _when("bc_watermark"), _when("dataverse_watermark"), _when("last_run_at"), _when("next_run_at"),
        _when("requested_at"),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_found", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(2000)),
    )
    op.create_table(
        "subscription_state",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(400), nullable=False),
        sa.Column("subscription_id", sa.String(64)),
        _when("expires_at"),
        sa.Column("status", sa.String(16), nullable=False, server_default="unknown"),
        _when("last_check"), _when("last_change"),
        sa.Column("error", sa.String(2000)),
    )


def downgrade() -> None:
    for table in ("subscription_state", "catch_up", "full_sync_line", "full_sync_run"):
        op.drop_table(table)
