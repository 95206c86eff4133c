"""finance: append-only records, booking periods, month close and closing documents

Revision ID: 0003f
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003f"
down_revision = "0002"
branch_labels = None
depends_on = None

# Advisory lock space (two-int form, so it never collides with the one-bigint locks used elsewhere):
# (PERIOD_LOCK, program_id) is taken shared by every record insert and exclusively by a month close.
PERIOD_LOCK = 1_346_720_068  # 'PERD'


def upgrade() -> None:
    op.create_table(
        "periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("act_number", sa.String(length=32), nullable=False),
        sa.Column("registry_number", sa.String(length=32), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.Text(), nullable=True),
        sa.Column("record_count", sa.BigInteger(), nullable=True),
        sa.Column("totals", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("documents_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('closing', 'closed')", name=op.f("ck_periods_status")),
        sa.CheckConstraint(
            "month = date_trunc('month', month)::date", name=op.f("ck_periods_first_of_month")
        ),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_periods_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periods")),
        sa.UniqueConstraint("program_id", "month", name=op.f("uq_periods_program_id_month")),
        sa.UniqueConstraint("number", name=op.f("uq_periods_number")),
    )
    op.create_table(
        "period_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('act.pdf', 'registry.xlsx', 'registry.csv')", name=op.f("ck_period_documents_kind")
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["periods.id"], name=op.f("fk_period_documents_period_id_periods")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_period_documents")),
        sa.UniqueConstraint("period_id", "kind", name=op.f("uq_period_documents_period_id")),
    )
    op.create_table(
        "period_document_chunks",
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["period_documents.id"],
            name=op.f("fk_period_document_chunks_document_id_period_documents"),
        ),
        sa.PrimaryKeyConstraint("document_id", "seq", name=op.f("pk_period_document_chunks")),
    )
    op.add_column("reconciliation_records", sa.Column("booked_period", sa.Date(), nullable=True))
    op.create_index(
        "ix_records_booked", "reconciliation_records", ["program_id", "booked_period"], unique=False
    )
    op.create_index(
        "ix_records_partner_fp", "reconciliation_records", ["partner_id", "code_fingerprint"], unique=False
    )

    # Records are append-only: corrections are new reversing records. TRUNCATE (test fixtures) still works.
    op.execute("""
CREATE FUNCTION reconciliation_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'reconciliation records are append-only: % is not allowed (write a reversing record)', TG_OP
    USING ERRCODE = 'raise_exception', HINT = 'append_only';
END $$""")
    op.execute(
        "CREATE TRIGGER reconciliation_records_no_update BEFORE UPDATE OR DELETE ON reconciliation_records"
        " FOR EACH ROW EXECUTE FUNCTION reconciliation_records_append_only()"
    )

    # Booking: the period a record counts in is the first month, from the one it happened in (program's
    # time zone), that is not closed. Every writer gets it without naming the column. The shared advisory
    # lock makes a concurrent month close wait for in-flight writers, and writers wait for the close.
    op.execute(f"""
CREATE FUNCTION reconciliation_records_book() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  zone text;
  m date;
BEGIN
  IF NEW.program_id IS NULL AND NEW.card_id IS NOT NULL THEN
    SELECT r.program_id INTO NEW.program_id FROM redemptions r WHERE r.card_id = NEW.card_id
     ORDER BY r.created_at LIMIT 1;
  END IF;
  IF NEW.program_id IS NULL THEN
    NEW.booked_period := date_trunc('month', NEW.occurred_at AT TIME ZONE 'UTC')::date;
    RETURN NEW;
  END IF;
  PERFORM pg_advisory_xact_lock_shared({PERIOD_LOCK}, NEW.program_id);
  SELECT p.timezone INTO zone FROM programs p WHERE p.id = NEW.program_id;
  m := date_trunc('month', NEW.occurred_at AT TIME ZONE coalesce(zone, 'UTC'))::date;
  WHILE EXISTS (SELECT 1 FROM periods WHERE program_id = NEW.program_id AND month = m) LOOP
    m := (m + interval '1 month')::date;
  END LOOP;
  NEW.booked_period := m;
  RETURN NEW;
END $$""")
    op.execute(
        "CREATE TRIGGER reconciliation_records_book BEFORE INSERT ON reconciliation_records"
        " FOR EACH ROW EXECUTE FUNCTION reconciliation_records_book()"
    )

    # A closed period never changes: no deletes; 'closing' may become 'closed' once (documents attached).
    op.execute("""
CREATE FUNCTION periods_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'a closed period cannot be reopened or deleted' USING HINT = 'period_closed';
  END IF;
  IF OLD.status = 'closed' OR NEW.status <> 'closed' OR NEW.program_id <> OLD.program_id
     OR NEW.month <> OLD.month OR NEW.number <> OLD.number OR NEW.act_number <> OLD.act_number
     OR NEW.registry_number <> OLD.registry_number OR NEW.closed_at <> OLD.closed_at THEN
    RAISE EXCEPTION 'a closed period never changes' USING HINT = 'period_closed';
  END IF;
  RETURN NEW;
END $$""")
    op.execute(
        "CREATE TRIGGER periods_guard BEFORE UPDATE OR DELETE ON periods"
        " FOR EACH ROW EXECUTE FUNCTION periods_guard()"
    )
    op.execute("""
CREATE FUNCTION period_documents_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'closing documents never change' USING HINT = 'period_closed';
END $$""")
    for table in ("period_documents", "period_document_chunks"):
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION period_documents_immutable()"
        )


def downgrade() -> None:
    for table in ("period_documents", "period_document_chunks"):
        op.execute(f"DROP TRIGGER {table}_immutable ON {table}")
    op.execute("DROP FUNCTION period_documents_immutable()")
    op.execute("DROP TRIGGER periods_guard ON periods")
    op.execute("DROP FUNCTION periods_guard()")
    op.execute("DROP TRIGGER reconciliation_records_book ON reconciliation_records")
    op.execute("DROP FUNCTION reconciliation_records_book()")
    op.execute("DROP TRIGGER reconciliation_records_no_update ON reconciliation_records")
    op.execute("DROP FUNCTION reconciliation_records_append_only()")
    op.drop_index("ix_records_partner_fp", table_name="reconciliation_records")
    op.drop_index("ix_records_booked", table_name="reconciliation_records")
    op.drop_column("reconciliation_records", "booked_period")
    op.drop_table("period_document_chunks")
    op.drop_table("period_documents")
    op.drop_table("periods")
