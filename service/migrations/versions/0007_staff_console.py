"""staff console: staff accounts, their sessions, the append-only staff audit log

Revision ID: 0007_staff_console
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_staff_console"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("programs", sa.ARRAY(sa.String(length=64)), server_default="{}", nullable=False),
        sa.Column("partner_code", sa.String(length=64), nullable=True),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "password_changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "role IN ('support', 'finance', 'partner', 'admin')", name="ck_staff_accounts_role"
        ),
        sa.CheckConstraint(
            "(role = 'partner') = (partner_code IS NOT NULL)", name="ck_staff_accounts_partner_scoped"
        ),
        sa.CheckConstraint(
            "role = 'support' OR cardinality(programs) = 0", name="ck_staff_accounts_program_scoped"
        ),
        sa.CheckConstraint("email = lower(email)", name="ck_staff_accounts_email_lower"),
        sa.PrimaryKeyConstraint("id", name="pk_staff_accounts"),
        sa.UniqueConstraint("email", name="uq_staff_accounts_email"),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("staff_account_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["staff_account_id"],
            ["staff_accounts.id"],
            name="fk_staff_sessions_staff_account_id_staff_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_staff_sessions"),
    )
    op.create_index("ix_staff_sessions_account", "staff_sessions", ["staff_account_id"])
    op.create_table(
        "staff_audit_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("staff_account_id", sa.Integer(), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("action_key", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_account_id"],
            ["staff_accounts.id"],
            name="fk_staff_audit_log_staff_account_id_staff_accounts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_staff_audit_log"),
    )
    op.create_index("ix_staff_audit_at", "staff_audit_log", ["at"])
    op.create_index(
        "uq_staff_audit_action_key",
        "staff_audit_log",
        ["staff_account_id", "action_key"],
        unique=True,
        postgresql_where=sa.text("action_key IS NOT NULL"),
    )
    # The audit log is append-only, like the reconciliation records. TRUNCATE (test fixtures) still works.
    op.execute("""
CREATE FUNCTION staff_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the staff audit log is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'raise_exception', HINT = 'append_only';
END $$""")
    op.execute(
        "CREATE TRIGGER staff_audit_log_no_update BEFORE UPDATE OR DELETE ON staff_audit_log"
        " FOR EACH ROW EXECUTE FUNCTION staff_audit_log_append_only()"
    )

    # The console's dashboard counts pools from indexes alone: the allocation index carries expires_at
    # (an index-only scan of coalesce(expires_at, ...) needs the column itself), and codes that left
    # their pool are indexed by when, for the last 7 days' pace.
    op.drop_index("ix_codes_allocation", table_name="codes")
    op.create_index(
        "ix_codes_allocation",
        "codes",
        ["product_id", sa.text("coalesce(expires_at, 'infinity')"), "id"],
        postgresql_where=sa.text("status = 'available'"),
        postgresql_include=["expires_at"],
    )
    op.create_index(
        "ix_codes_taken",
        "codes",
        ["product_id", "status_changed_at"],
        postgresql_where=sa.text("status IN ('reserved', 'issued')"),
    )


def downgrade() -> None:
    op.drop_index("ix_codes_taken", table_name="codes")
    op.drop_index("ix_codes_allocation", table_name="codes")
    op.create_index(
        "ix_codes_allocation",
        "codes",
        ["product_id", sa.text("coalesce(expires_at, 'infinity')"), "id"],
        postgresql_where=sa.text("status = 'available'"),
    )
    op.execute("DROP TRIGGER staff_audit_log_no_update ON staff_audit_log")
    op.execute("DROP FUNCTION staff_audit_log_append_only()")
    op.drop_table("staff_audit_log")
    op.drop_table("staff_sessions")
    op.drop_table("staff_accounts")
