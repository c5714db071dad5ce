"""Values generated once per installation and shared by every process: `installation` (key, value).

The first is `integration_tag`, the `?tag=` our Dataverse writes carry (random per installation, so that no
user can make a change of their own look like ours); the first process that needs it inserts it
(service/store/installation.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("installation")
