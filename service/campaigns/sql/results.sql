-- Every line and what became of it, in file order.
SELECT l.line_no, l.ref, l.msisdn, l.status, l.redemption_id, r.status AS redemption_status,
       r.status_reason, l.error_code
  FROM campaign_lines l
  LEFT JOIN redemptions r ON r.id = l.redemption_id
 WHERE l.campaign_id = %(campaign)s
 ORDER BY l.line_no
