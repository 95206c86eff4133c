-- The next pending lines in file order, locked (another worker's lines are skipped), with each
-- line's offer and whether its subscriber opted out of the program's bulk SMS.
SELECT l.line_no, l.ref, l.msisdn, o.code AS offer_code,
       EXISTS (SELECT FROM bulk_opt_outs b WHERE b.program_id = c.program_id AND b.msisdn = l.msisdn) AS opted_out
  FROM campaign_lines l
  JOIN campaigns c ON c.id = l.campaign_id
  JOIN offers o ON o.id = l.offer_id
 WHERE l.campaign_id = %(campaign)s AND l.status = 'pending'
 ORDER BY l.line_no
 LIMIT %(limit)s
   FOR UPDATE OF l SKIP LOCKED
