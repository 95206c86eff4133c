"""Security (issue 29): the sandbox's webhook events kept apart from the real ones, the sandbox's
month figures, and the throttles of card PINs and staff sign-in (per client, with progressive
delays) that replace the per-card and per-account locks an attacker could aim at their owner.

Revision ID: 0015_security
Revises: 0013_quiet_hours
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_security"
down_revision = "0013_quiet_hours"
branch_labels = None
depends_on = None


def upgrade() -> None:
    false = sa.text("false")
    # Every event about a sandbox redemption or card says so in its data; the column makes it a filter.
    op.add_column("webhook_events", sa.Column("sandbox", sa.Boolean(), server_default=false, nullable=False))
    op.execute("UPDATE webhook_events SET sandbox = true WHERE payload -> 'data' ->> 'sandbox' = 'true'")
    op.create_index(
        "ix_webhook_events_sandbox_program_created",
        "webhook_events",
        ["program_id", "created_at", "id"],
        postgresql_where=sa.text("sandbox"),
    )
    op.create_index(
        "ix_redemptions_sandbox_month",
        "redemptions",
        ["program_id", "created_at"],
        postgresql_where=sa.text("sandbox"),
    )


def downgrade() -> None:
    op.drop_index("ix_redemptions_sandbox_month", table_name="redemptions")
    op.drop_index("ix_webhook_events_sandbox_program_created", table_name="webhook_events")
    op.drop_column("webhook_events", "sandbox")
