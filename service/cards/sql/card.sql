-- Template: a card with what its exchange needs of its redemption (none for a card of no
-- redemption); {where}: which card, and how it is locked.
SELECT c.id, c.product_id, c.last4, c.number_fingerprint, c.pin_enc, c.key_id, c.currency,
       c.nominal_minor, c.balance_minor, c.status, c.expires_at,
       r.id AS redemption_id, r.external_id, r.program_id, r.tariff_id, r.offer_id
  FROM cards c LEFT JOIN redemptions r ON r.card_id = c.id
 WHERE {where}
