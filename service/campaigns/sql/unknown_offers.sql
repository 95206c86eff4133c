-- Lines whose offer the program does not have at all: report lines.
INSERT INTO campaign_problems (campaign_id, line_no, code, message)
SELECT l.campaign_id, l.line_no, 'unknown_offer', 'offer ' || l.offer_code || ': not an offer of this program'
  FROM campaign_lines l
  JOIN campaigns c ON c.id = l.campaign_id
 WHERE l.campaign_id = %(campaign)s AND l.nominal_minor IS NULL AND l.offer_code IS NOT NULL
   AND NOT EXISTS (SELECT FROM offers x WHERE x.program_id = c.program_id AND x.code = l.offer_code)
