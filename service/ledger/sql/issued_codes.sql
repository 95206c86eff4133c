-- A partner's net issued codes, ever (a cancel reverses its issue), one row per code, with whether it
-- was issued in the reconciled month.
SELECT code_fingerprint AS fingerprint, min(code_last4) AS last4, min(sku) AS sku,
       min(occurred_at) FILTER (WHERE quantity > 0) AS issued_at, max(face_value_minor) AS face_value_minor,
       min(currency) AS currency, (array_agg(redemption_id::text) FILTER (WHERE quantity > 0))[1] AS redemption_id,
       bool_or(booked_period = %(month)s AND quantity > 0) AS in_period
  FROM reconciliation_records
 WHERE partner_id = %(partner)s AND code_fingerprint IS NOT NULL AND type IN ('issue', 'cancel', 'exchange')
 GROUP BY code_fingerprint
HAVING sum(quantity) > 0
