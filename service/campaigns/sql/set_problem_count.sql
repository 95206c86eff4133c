UPDATE campaigns SET problem_count = %(count)s WHERE id = %(id)s
