"""Couplings, record locks, the sync job log, sync errors and mapping configuration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "coupling",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("bc_id", sa.String(64), nullable=False),
        sa.Column("dataverse_id", sa.String(64), nullable=False),
        _when("bc_modified"), _when("dataverse_modified"),
        sa.Column("bc_hash", sa.String(64)), sa.Column("dataverse_hash", sa.String(64)),
        sa.Column("last_result", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("info", sa.Text()),
        _when("created_at", False), _when("updated_at", False),
        sa.UniqueConstraint("mapping", "bc_id", name="uq_coupling_bc"),
        sa.UniqueConstraint("mapping", "dataverse_id", name="uq_coupling_dataverse"),
    )
    op.create_index("ix_coupling_mapping", "coupling", ["mapping"])
    op.create_table(
        "record_lock",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        _when("locked_until", False),
    )
    op.create_table(
        "sync_job",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bucket", sa.String(64), nullable=False),
        _when("started_at", False), _when("finished_at"),
        *(sa.Column(c, sa.Integer(), nullable=False, server_default="0")
          for c in ("inserted", "modified", "deleted", "unchanged", "skipped", "failed", "coupled")),
        sa.UniqueConstraint("mapping", "direction", "kind", "bucket", name="uq_sync_job_bucket"),
    )
    op.create_index("ix_sync_job_mapping", "sync_job", ["mapping"])
    op.create_table(
        "sync_error",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("destination_id", sa.String(64)),
        sa.Column("message", sa.String(2000), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("state", sa.String(16), nullable=False, server_default="open"),
        sa.Column("waiting_for", sa.String(200)),
        sa.Column("event", sa.Text()),
        _when("first_seen", False), _when("last_seen", False),
        sa.UniqueConstraint("mapping", "source", "source_id", name="uq_sync_error_record"),
    )
    op.create_index("ix_sync_error_mapping", "sync_error", ["mapping"])
    op.create_index("ix_sync_error_waiting_for", "sync_error", ["waiting_for"])
    op.create_table(
        "mapping_config",
        sa.Column("mapping", sa.String(64), primary_key=True),
        sa.Column("config", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("on_hold", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        _when("updated_at", False),
    )


def downgrade() -> None:
    for table in ("mapping_config", "sync_error", "sync_job", "record_lock", "coupling"):
        op.drop_table(table)
