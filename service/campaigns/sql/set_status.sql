UPDATE campaigns SET status = %(status)s, updated_at = %(now)s WHERE id = %(id)s
