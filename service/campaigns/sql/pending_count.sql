SELECT count(*) FROM campaign_lines WHERE campaign_id = %(campaign)s AND status = 'pending'
