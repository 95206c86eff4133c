-- Lines whose offer exists in the program but not for the campaign's tariff now (inactive, or not
-- eligible): report lines.
INSERT INTO campaign_problems (campaign_id, line_no, code, message)
SELECT l.campaign_id, l.line_no, 'offer_not_for_tariff',
       'offer ' || coalesce(l.offer_code, o.code) || ': not available on tariff ' || %(tariff)s || ' now'
  FROM campaign_lines l
  JOIN campaigns c ON c.id = l.campaign_id
  JOIN offers o ON o.id = c.offer_id
 WHERE l.campaign_id = %(campaign)s AND l.nominal_minor IS NULL
   AND EXISTS (SELECT FROM offers x WHERE x.program_id = c.program_id AND x.code = coalesce(l.offer_code, o.code))
