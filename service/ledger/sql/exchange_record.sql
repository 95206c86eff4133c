-- The exchange record of the exchange the CTE e of an exchange's statement inserted; rec_channel says
-- where it happened (the partner's desk or the holder's online page).
INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,
                                    partner_id, quantity, currency, face_value_minor, cost_minor,
                                    vat_rate_bp, vat_minor, code_fingerprint, code_last4, redemption_id,
                                    card_id, channel)
SELECT %(rec_type)s, %(rec_occurred_at)s, %(rec_program)s, %(rec_tariff)s, %(rec_offer)s, %(rec_product)s,
       %(rec_sku)s, %(rec_partner)s, 1, %(rec_currency)s, %(rec_face)s, %(rec_cost)s,
       %(rec_rate)s, %(rec_vat)s, %(rec_fingerprint)s, %(rec_last4)s, NULL,
       %(rec_card)s, %(rec_channel)s
  FROM e
