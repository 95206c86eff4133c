"""take_program_budget(): the program's monthly budget taken by one statement that refuses with an
error (check_violation on "program_budget") instead of an empty result, so that the API can send it
in the same round trip as the COMMIT and hold the program's budget row only inside the server.

Revision ID: 0011_take_program_budget
Revises: 0010_operations
Create Date: 2026-12-04
"""

from alembic import op

revision = "0011_take_program_budget"
down_revision = "0010_operations"
branch_labels = None
depends_on = None

# Takes nothing when the redemption was not inserted (a refusal the statement before it found): the
# caller reports that refusal. Otherwise adds `amount` to the month's counter if it stays within
# `budget`, or raises, which aborts the transaction (and the COMMIT pipelined after it).
TAKE_PROGRAM_BUDGET = """
CREATE OR REPLACE FUNCTION take_program_budget(
    program integer, budget_month date, amount bigint, budget bigint, redemption uuid
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM redemptions WHERE id = redemption) THEN
        RETURN;
    END IF;
    INSERT INTO program_budget_usage AS u (program_id, month, spent_minor)
    SELECT program, budget_month, amount WHERE amount <= budget
    ON CONFLICT (program_id, month) DO UPDATE SET spent_minor = u.spent_minor + EXCLUDED.spent_minor
    WHERE u.spent_minor + EXCLUDED.spent_minor <= budget;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the program''s monthly budget is spent'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'program_budget';
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(TAKE_PROGRAM_BUDGET)


def downgrade() -> None:
    op.execute("DROP FUNCTION take_program_budget(integer, date, bigint, bigint, uuid)")
