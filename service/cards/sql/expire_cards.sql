-- Expires up to %(limit)s active cards past their date (skipping those locked by an exchange), with
-- each one's unused balance and what its breakage record and webhook need of its redemption.
WITH due AS (
  SELECT id, balance_minor FROM cards
   WHERE status = 'active' AND expires_at <= %(now)s
   ORDER BY expires_at LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
),
done AS (
  UPDATE cards c SET status = 'expired', balance_minor = 0 FROM due WHERE c.id = due.id
  RETURNING c.id, c.product_id, c.currency, c.last4, c.number_fingerprint, c.sandbox, due.balance_minor AS unused
)
SELECT done.*, r.id AS redemption_id, r.external_id, r.program_id, r.tariff_id, r.offer_id
  FROM done LEFT JOIN redemptions r ON r.card_id = done.id
