UPDATE campaign_lines SET status = 'cancelled', done_at = %(now)s
 WHERE campaign_id = %(campaign)s AND status = 'pending'
