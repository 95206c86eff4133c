-- The first lines of the report: the campaign's own problems, then the lines' in file order.
SELECT line_no AS line, code, message FROM campaign_problems
 WHERE campaign_id = %(campaign)s
 ORDER BY line_no NULLS FIRST, id
 LIMIT %(limit)s
