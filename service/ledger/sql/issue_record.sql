-- The issue record of the redemption the CTE r of a redemption's statement inserted (RETURNING
-- service.ledger.service.REDEMPTION_RETURNING), for the reward of its CTE c (RETURNING fingerprint):
-- its time, catalog ids, currency, face value and last 4 come from the redemption row, so the statement
-- carries each value once. No redemption row, no record.
INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,
                                    partner_id, quantity, currency, face_value_minor, cost_minor,
                                    vat_rate_bp, vat_minor, code_fingerprint, code_last4, redemption_id,
                                    card_id, campaign_id)
SELECT 'issue', r.created_at, r.program_id, r.tariff_id, r.offer_id, r.product_id, %(rec_sku)s,
       %(rec_partner)s, 1, r.currency, r.nominal_minor, %(rec_cost)s,
       %(rec_rate)s, %(rec_vat)s, c.fingerprint, r.reward_last4, r.id,
       r.card_id, r.campaign_id
  FROM r, c
