UPDATE campaign_lines SET status = 'failed', error_code = %(code)s, done_at = %(now)s
 WHERE campaign_id = %(campaign)s AND line_no = %(line)s
