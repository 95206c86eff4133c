SELECT line_no AS line, code, message FROM campaign_problems
 WHERE campaign_id = %(campaign)s
 ORDER BY line_no NULLS FIRST, id
