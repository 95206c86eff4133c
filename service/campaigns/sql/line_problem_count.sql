-- The parser's findings about single lines, which a change of the campaign does not touch.
SELECT count(*) FROM campaign_problems WHERE campaign_id = %(campaign)s AND line_no IS NOT NULL
