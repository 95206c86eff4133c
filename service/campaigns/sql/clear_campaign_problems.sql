-- The report's lines about the campaign as a whole and the lines' catalog checks, before they run again.
DELETE FROM campaign_problems
 WHERE campaign_id = %(campaign)s
   AND (line_no IS NULL OR code IN ('duplicate_ref', 'duplicate_line', 'unknown_offer', 'offer_not_for_tariff'))
