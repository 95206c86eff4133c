"""Campaigns (issue 27): a campaign, its lines, its validation report and its history; the program's
bulk opt-outs and approval threshold; the `approver` role for keys and staff; a redemption's and a
record's campaign.

Revision ID: 0024_campaigns
Revises: 0023_codes_autovacuum
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0024_campaigns"
down_revision = "0023_codes_autovacuum"
branch_labels = None
depends_on = None

STATUSES = "('draft', 'submitted', 'approved', 'running', 'paused', 'done', 'cancelled')"
LINE_STATUSES = "('pending', 'done', 'failed', 'cancelled')"


def _roles(table: str, new: str) -> None:
    # Earlier migrations named this check inconsistently: drop it by what it checks, not by name.
    op.execute(f"""
DO $$
DECLARE c text;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
            WHERE conrelid = '{table}'::regclass AND contype = 'c'
              AND pg_get_constraintdef(oid) LIKE '%''admin''%'
  LOOP
    EXECUTE format('ALTER TABLE {table} DROP CONSTRAINT %I', c);
  END LOOP;
END $$""")
    op.create_check_constraint(op.f(f"ck_{table}_role"), table, f"role IN {new}")


def upgrade() -> None:
    _roles(
        "api_keys",
        "('loyalty', 'partner', 'finance', 'support', 'admin', 'approver')",
    )
    _roles("staff_accounts", "('support', 'finance', 'partner', 'admin', 'approver')")
    op.add_column("programs", sa.Column("campaign_approval_minor", sa.BigInteger(), nullable=True))
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "campaigns",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column(
            "program_id",
            sa.Integer(),
            sa.ForeignKey("programs.id", name=op.f("fk_campaigns_program_id_programs")),
            nullable=False,
        ),
        sa.Column(
            "tariff_id",
            sa.Integer(),
            sa.ForeignKey("tariffs.id", name=op.f("fk_campaigns_tariff_id_tariffs")),
            nullable=False,
        ),
        sa.Column(
            "offer_id",
            sa.Integer(),
            sa.ForeignKey("offers.id", name=op.f("fk_campaigns_offer_id_offers")),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("locale", sa.String(2), server_default="kk", nullable=False),
        sa.Column("budget_cap_minor", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", ts, nullable=True),
        sa.Column("rate_per_second", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), server_default="draft", nullable=False),
        sa.Column("file_name", sa.Text(), nullable=True),
        sa.Column("file_sha256", sa.LargeBinary(), nullable=True),
        sa.Column("file_format", sa.String(8), nullable=True),
        sa.Column("file_encoding", sa.String(16), nullable=True),
        sa.Column("file_separator", sa.String(1), nullable=True),
        sa.Column("line_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("problem_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("validated_at", ts, nullable=True),
        sa.Column("needs_approval", sa.Boolean(), nullable=True),
        sa.Column("submitted_by", sa.Text(), nullable=True),
        sa.Column("submitted_at", ts, nullable=True),
        sa.Column("submitted_sha256", sa.LargeBinary(), nullable=True),
        sa.Column("submitted_lines", sa.Integer(), nullable=True),
        sa.Column("submitted_total_minor", sa.BigInteger(), nullable=True),
        sa.Column("approved_by", sa.Text(), nullable=True),
        sa.Column("approved_at", ts, nullable=True),
        sa.Column("rejected_by", sa.Text(), nullable=True),
        sa.Column("rejected_at", ts, nullable=True),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column("reserved_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("budget_month", sa.Date(), nullable=True),
        sa.Column("started_at", ts, nullable=True),
        sa.Column("paced_until", ts, nullable=True),
        sa.Column("finished_at", ts, nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "api_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", name=op.f("fk_campaigns_api_key_id_api_keys")),
            nullable=True,
        ),
        sa.Column("created_at", ts, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", ts, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"status IN {STATUSES}", name=op.f("ck_campaigns_status")),
        sa.CheckConstraint("rate_per_second IS NULL OR rate_per_second > 0", name=op.f("ck_campaigns_rate")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index("ix_campaigns_program_created", "campaigns", ["program_id", "created_at"])
    op.create_index(
        "ix_campaigns_running",
        "campaigns",
        ["status"],
        postgresql_where=sa.text("status IN ('approved', 'running')"),
    )
    op.create_table(
        "campaign_lines",
        sa.Column(
            "campaign_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(
                "campaigns.id", ondelete="CASCADE", name=op.f("fk_campaign_lines_campaign_id_campaigns")
            ),
            nullable=False,
        ),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("msisdn", sa.String(16), nullable=False),
        sa.Column("offer_code", sa.String(64), nullable=True),
        sa.Column("offer_id", sa.Integer(), nullable=True),
        sa.Column("nominal_minor", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("redemption_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("done_at", ts, nullable=True),
        sa.CheckConstraint(f"status IN {LINE_STATUSES}", name=op.f("ck_campaign_lines_status")),
        sa.PrimaryKeyConstraint("campaign_id", "line_no", name=op.f("pk_campaign_lines")),
    )
    op.create_index(
        "ix_campaign_lines_pending",
        "campaign_lines",
        ["campaign_id", "line_no"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_campaign_lines_ref", "campaign_lines", ["campaign_id", "ref"])
    op.create_table(
        "campaign_problems",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "campaign_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(
                "campaigns.id", ondelete="CASCADE", name=op.f("fk_campaign_problems_campaign_id_campaigns")
            ),
            nullable=False,
        ),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_problems")),
    )
    op.create_index("ix_campaign_problems_campaign", "campaign_problems", ["campaign_id", "line_no"])
    op.create_table(
        "campaign_moves",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "campaign_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(
                "campaigns.id", ondelete="CASCADE", name=op.f("fk_campaign_moves_campaign_id_campaigns")
            ),
            nullable=False,
        ),
        sa.Column("at", ts, server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("details", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_moves")),
    )
    op.create_index("ix_campaign_moves_campaign", "campaign_moves", ["campaign_id", "id"])
    op.create_table(
        "bulk_opt_outs",
        sa.Column(
            "program_id",
            sa.Integer(),
            sa.ForeignKey("programs.id", name=op.f("fk_bulk_opt_outs_program_id_programs")),
            nullable=False,
        ),
        sa.Column("msisdn", sa.String(16), nullable=False),
        sa.Column("created_at", ts, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("program_id", "msisdn", name=op.f("pk_bulk_opt_outs")),
    )
    op.add_column(
        "redemptions",
        sa.Column(
            "campaign_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("campaigns.id", name=op.f("fk_redemptions_campaign_id_campaigns")),
            nullable=True,
        ),
    )
    op.add_column(
        "reconciliation_records", sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("reconciliation_records", "campaign_id")
    op.drop_column("redemptions", "campaign_id")
    for table in ("bulk_opt_outs", "campaign_moves", "campaign_problems", "campaign_lines", "campaigns"):
        op.drop_table(table)
    op.drop_column("programs", "campaign_approval_minor")
    # The approver role goes with this revision: its keys are revoked, its accounts disabled.
    op.execute(
        "UPDATE api_keys SET role = 'support', revoked_at = coalesce(revoked_at, now())"
        " WHERE role = 'approver'"
    )
    op.execute(
        "UPDATE staff_accounts SET role = 'support', disabled_at = coalesce(disabled_at, now())"
        " WHERE role = 'approver'"
    )
    _roles("staff_accounts", "('support', 'finance', 'partner', 'admin')")
    _roles("api_keys", "('loyalty', 'partner', 'finance', 'support', 'admin')")
