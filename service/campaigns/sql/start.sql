UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, %(now)s), updated_at = %(now)s
 WHERE id = %(id)s AND status = 'approved'
