SELECT spent_minor FROM program_budget_usage WHERE program_id = %(program)s AND month = %(month)s
