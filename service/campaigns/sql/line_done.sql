UPDATE campaign_lines SET status = 'done', redemption_id = %(redemption)s, done_at = %(now)s
 WHERE campaign_id = %(campaign)s AND line_no = %(line)s
