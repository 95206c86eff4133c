-- What a campaign reserved and its lines did not use, back into the program's month of the budget.
UPDATE program_budget_usage SET spent_minor = spent_minor - %(amount)s
 WHERE program_id = %(program)s AND month = %(month)s
