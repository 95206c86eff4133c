-- The lines that can run and their value.
SELECT count(*) AS lines, sum(nominal_minor) AS total FROM campaign_lines WHERE campaign_id = %(campaign)s AND nominal_minor IS NOT NULL
