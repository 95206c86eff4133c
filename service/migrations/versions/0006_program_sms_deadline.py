"""a program's own deadline for its reward SMS

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("programs", sa.Column("sms_deadline_hours", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("programs", "sms_deadline_hours")
