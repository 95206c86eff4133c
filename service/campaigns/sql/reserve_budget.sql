-- The campaign's value taken from the program's month of the budget at once, or nothing (no row)
-- when the budget cannot hold it.
INSERT INTO program_budget_usage AS u (program_id, month, spent_minor)
SELECT %(program)s, %(month)s, %(amount)s WHERE %(amount)s <= %(budget)s
ON CONFLICT (program_id, month) DO UPDATE SET spent_minor = u.spent_minor + EXCLUDED.spent_minor
 WHERE u.spent_minor + EXCLUDED.spent_minor <= %(budget)s
