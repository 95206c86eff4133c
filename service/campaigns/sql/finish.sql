UPDATE campaigns SET status = %(status)s, finished_at = %(now)s, updated_at = %(now)s WHERE id = %(id)s
