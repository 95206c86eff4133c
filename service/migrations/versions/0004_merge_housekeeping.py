"""merge the parallel 0003 branches; index idempotency keys by expiry for the purge

Revision ID: 0004
Revises: 0003c, 0003d, 0003f
Create Date: 2026-11-23
"""

from alembic import op

revision = "0004"
down_revision = ("0003c", "0003d", "0003f")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
