-- The lines by state, the value spent, and the grants that went without an SMS (opted out).
SELECT count(*) FILTER (WHERE l.status = 'pending') AS pending,
       count(*) FILTER (WHERE l.status = 'done') AS done,
       count(*) FILTER (WHERE l.status = 'failed') AS failed,
       count(*) FILTER (WHERE l.status = 'cancelled') AS cancelled,
       CAST(coalesce(sum(l.nominal_minor) FILTER (WHERE l.status = 'done'), 0) AS bigint) AS spent_minor,
       count(r.id) FILTER (WHERE r.status_reason = 'bulk_opt_out') AS silent
  FROM campaign_lines l
  LEFT JOIN redemptions r ON r.id = l.redemption_id
 WHERE l.campaign_id = %(campaign)s
