-- The lines that can run and their value.
SELECT count(*), sum(nominal_minor) FROM campaign_lines WHERE campaign_id = %(campaign)s AND nominal_minor IS NOT NULL
