"""when a failed webhook attempt is tried next

Revision ID: 0019_supervision
Revises: 0015_security
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_supervision"
down_revision = "0015_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written by the worker with each failed attempt (its log line says the same), shown by the
    # console and the events API. Attempts of earlier releases have none.
    op.add_column("webhook_attempts", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_attempts", "next_attempt_at")
