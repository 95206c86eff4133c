"""Sandbox keys: a loyalty key marked sandbox redeems against sandbox rewards (cards marked sandbox,
test codes drawn from no pool), writes no reconciliation record and takes no budget. Its redemptions
are marked too, and their external ids are unique per program within the sandbox or outside it, so a
test order id can never block a real one.

Revision ID: 0012_sandbox
Revises: 0011_take_program_budget
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_sandbox"
down_revision = "0011_take_program_budget"
branch_labels = None
depends_on = None


def upgrade() -> None:
    false = sa.text("false")
    op.add_column("api_keys", sa.Column("sandbox", sa.Boolean(), server_default=false, nullable=False))
    op.create_check_constraint(
        op.f("ck_api_keys_sandbox_loyalty"), "api_keys", "NOT sandbox OR role = 'loyalty'"
    )
    op.add_column("cards", sa.Column("sandbox", sa.Boolean(), server_default=false, nullable=False))
    op.add_column("redemptions", sa.Column("sandbox", sa.Boolean(), server_default=false, nullable=False))
    op.drop_constraint(op.f("uq_redemptions_program_id_external_id"), "redemptions", type_="unique")
    op.create_unique_constraint(
        op.f("uq_redemptions_program_id_sandbox_external_id"),
        "redemptions",
        ["program_id", "sandbox", "external_id"],
    )
    op.create_index(
        "ix_sms_sandbox_unsettled",
        "sms_messages",
        ["sent_at"],
        postgresql_where=sa.text("provider = 'sandbox' AND status = 'sent'"),
    )
    # A sandbox code reward comes from no pool: such a redemption has neither a code nor a card row.
    op.drop_constraint(op.f("ck_redemptions_one_reward"), "redemptions", type_="check")
    op.create_check_constraint(
        op.f("ck_redemptions_one_reward"),
        "redemptions",
        "(code_id IS NULL) <> (card_id IS NULL) OR (sandbox AND code_id IS NULL)",
    )


def downgrade() -> None:
    op.drop_index("ix_sms_sandbox_unsettled", table_name="sms_messages")
    op.execute("DELETE FROM redemptions WHERE sandbox")
    op.drop_constraint(op.f("ck_redemptions_one_reward"), "redemptions", type_="check")
    op.create_check_constraint(
        op.f("ck_redemptions_one_reward"), "redemptions", "(code_id IS NULL) <> (card_id IS NULL)"
    )
    op.drop_constraint(op.f("uq_redemptions_program_id_sandbox_external_id"), "redemptions", type_="unique")
    op.create_unique_constraint(
        op.f("uq_redemptions_program_id_external_id"), "redemptions", ["program_id", "external_id"]
    )
    op.drop_column("redemptions", "sandbox")
    op.drop_column("cards", "sandbox")
    op.drop_constraint(op.f("ck_api_keys_sandbox_loyalty"), "api_keys", type_="check")
    op.drop_column("api_keys", "sandbox")
