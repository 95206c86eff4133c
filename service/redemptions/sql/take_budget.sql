-- The program's monthly budget, an atomic counter that refuses to pass it (migration 0011), taken
-- only when the redemption row was inserted. Every redemption of the program waits for this row, so it
-- is locked as late as possible: after the redemption statement, and on the API's path in the COMMIT's
-- own round trip. A refusal is an error (check_violation "program_budget"), which aborts the
-- transaction, so that a COMMIT pipelined behind it rolls back.
SELECT take_program_budget(%(program)s, %(budget_month)s, %(nominal)s, %(budget)s, %(id)s)
