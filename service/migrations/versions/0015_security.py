"""Security (issue 29): the sandbox's webhook events kept apart from the real ones, the sandbox's
month figures, and the throttles of card PINs and staff sign-in (per client, with progressive
delays) that replace the per-card and per-account locks an attacker could aim at their owner.

Revision ID: 0015_security
Revises: 0020_contract
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_security"
down_revision = "0020_contract"
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

    # Wrong PINs (and staff passwords) counted per target and per client (service/kit/security/throttle.py)
    # instead of one counter per card (and per account) that anyone could run up to lock out its owner.
    op.create_table(
        "auth_throttle",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.LargeBinary(), nullable=False),
        sa.Column("client", sa.String(80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", "target", "client", name=op.f("pk_auth_throttle")),
    )
    op.create_index("ix_auth_throttle_last_failed", "auth_throttle", ["last_failed_at"])
    op.create_table(
        "staff_sign_in_places",
        sa.Column("target", sa.LargeBinary(), nullable=False),
        sa.Column("client", sa.String(80), nullable=False),
        sa.Column("last_signed_in_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "client", name=op.f("pk_staff_sign_in_places")),
    )
    op.drop_column("staff_accounts", "failed_logins")
    op.drop_column("staff_accounts", "locked_until")
    op.drop_column("cards", "failed_pin_attempts")
    op.drop_column("cards", "locked_until")
    op.drop_constraint(op.f("ck_card_events_event"), "card_events", type_="check")
    op.create_check_constraint(
        op.f("ck_card_events_event"),
        "card_events",
        "event IN ('blocked', 'unblocked', 'locked', 'unlocked', 'expired')",
    )


def downgrade() -> None:
    op.execute("DELETE FROM card_events WHERE event = 'unlocked'")
    op.drop_constraint(op.f("ck_card_events_event"), "card_events", type_="check")
    op.create_check_constraint(
        op.f("ck_card_events_event"), "card_events", "event IN ('blocked', 'unblocked', 'locked', 'expired')"
    )
    op.add_column("cards", sa.Column("failed_pin_attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("cards", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "staff_accounts", sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("staff_accounts", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    op.drop_table("staff_sign_in_places")
    op.drop_index("ix_auth_throttle_last_failed", table_name="auth_throttle")
    op.drop_table("auth_throttle")
    op.drop_index("ix_redemptions_sandbox_month", table_name="redemptions")
    op.drop_index("ix_webhook_events_sandbox_program_created", table_name="webhook_events")
    op.drop_column("webhook_events", "sandbox")
