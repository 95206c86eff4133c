SELECT id FROM campaigns WHERE status IN ('approved', 'running') AND updated_at < %(before)s
