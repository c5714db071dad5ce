"""Mapping availability and BC delivery (setup's findings), and the watermark of BC polling.

- `mapping_config.unavailable`: why setup keeps a mapping off (its BC API route is not installed, or the
  live schema lacks what it maps); null when it runs.
- `mapping_config.bc_delivery`: how changes on the BC side reach us: `push` (a webhook subscription) or
  `poll` (BC cannot notify that resource: it is read by `lastModifiedDateTime`); null before setup.
- `catch_up.poll_watermark`, `polled_at`, `polls`, `poll_error`: the polling job's own watermark per mapping,
  and how many polls ran (every Nth also reconciles everything: a poll by modified time sees no deletes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mapping_config") as table:
        table.add_column(sa.Column("unavailable", sa.Text(), nullable=True))
        table.add_column(sa.Column("bc_delivery", sa.String(8), nullable=True))
    with op.batch_alter_table("catch_up") as table:
        table.add_column(sa.Column("poll_watermark", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("polls", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("poll_error", sa.String(2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("catch_up") as table:
        table.drop_column("poll_error")
        table.drop_column("polls")
        table.drop_column("polled_at")
        table.drop_column("poll_watermark")
    with op.batch_alter_table("mapping_config") as table:
        table.drop_column("bc_delivery")
        table.drop_column("unavailable")
