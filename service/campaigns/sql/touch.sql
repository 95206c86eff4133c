-- The runner's heartbeat: housekeeping sends again a campaign whose runner went quiet (stalled.sql).
UPDATE campaigns SET updated_at = %(now)s WHERE id = %(id)s AND status IN ('approved', 'running')
