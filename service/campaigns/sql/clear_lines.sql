-- A new upload replaces the draft's lines and its whole report.
WITH gone AS (DELETE FROM campaign_lines WHERE campaign_id = %(campaign)s)
DELETE FROM campaign_problems WHERE campaign_id = %(campaign)s
