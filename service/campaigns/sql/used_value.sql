-- The value the campaign's lines took: those that became redemptions.
SELECT sum(nominal_minor) FROM campaign_lines WHERE campaign_id = %(campaign)s AND status = 'done'
