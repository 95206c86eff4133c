"""the registry's record numbers: gapless per program, given at period close

A reconciliation record's id comes from a sequence, so a refused request whose transaction had drawn
one (a budget refused at COMMIT, an idempotency conflict, any rollback) leaves a gap in the ids. The
registry therefore no longer numbers records by id: closing a period numbers its records in
registry_entries, per program, continuing from the program's last number with no gap, in the
transaction that writes the registry. Entries never change.

Periods closed before this migration are numbered here as a close would have (oldest close first),
so the next close continues after them. Their stored documents (immutable) keep the `RR-<record id>`
numbers they were issued with; exports show the new numbers for those records.

Revision ID: 0020_contract
Revises: 0013_quiet_hours
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_contract"
down_revision = "0013_quiet_hours"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_entries",
        sa.Column("record_id", sa.BigInteger(), sa.ForeignKey("reconciliation_records.id"), primary_key=True),
        sa.Column("program_id", sa.Integer(), sa.ForeignKey("programs.id"), nullable=False),
        sa.Column("period_id", sa.Integer(), sa.ForeignKey("periods.id"), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("number > 0", name="ck_registry_entries_number"),
        sa.UniqueConstraint("program_id", "number", name="uq_registry_entries_program_number"),
    )
    op.create_index("ix_registry_entries_period", "registry_entries", ["period_id"])
    op.execute("""
CREATE FUNCTION registry_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'registry numbers never change' USING HINT = 'period_closed';
END $$""")
    op.execute(
        "CREATE TRIGGER registry_entries_immutable BEFORE UPDATE OR DELETE ON registry_entries"
        " FOR EACH ROW EXECUTE FUNCTION registry_entries_immutable()"
    )
    # Periods closed before this migration: numbered as a close would have, oldest close first.
    op.execute("""
INSERT INTO registry_entries (record_id, program_id, period_id, number)
SELECT r.id, r.program_id, pe.id,
       row_number() OVER (PARTITION BY r.program_id ORDER BY pe.number, r.occurred_at, r.id)
  FROM reconciliation_records r
  JOIN periods pe ON pe.program_id = r.program_id AND pe.month = r.booked_period""")


def downgrade() -> None:
    op.execute("DROP TRIGGER registry_entries_immutable ON registry_entries")
    op.execute("DROP FUNCTION registry_entries_immutable()")
    op.drop_index("ix_registry_entries_period", table_name="registry_entries")
    op.drop_table("registry_entries")
