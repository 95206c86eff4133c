SELECT line_no, code, message FROM campaign_problems
 WHERE campaign_id = %(campaign)s
 ORDER BY line_no NULLS FIRST, id
