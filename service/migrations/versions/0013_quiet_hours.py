"""a program's quiet hours for bulk SMS

Revision ID: 0013_quiet_hours
Revises: 0012_sandbox
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_quiet_hours"
down_revision = "0012_sandbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing programs get the daytime-only window that Kazakh operators apply to bulk traffic;
    # the next `rewards catalog apply` sets each program's own.
    op.add_column("programs", sa.Column("quiet_hours", sa.String(11), nullable=True))
    op.execute("UPDATE programs SET quiet_hours = '21:00-09:00'")


def downgrade() -> None:
    op.drop_column("programs", "quiet_hours")
