-- The cancel record of a redemption: its issue record with opposite signs, at the cancel's time.
INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,
                                    partner_id, quantity, currency, face_value_minor, cost_minor,
                                    vat_rate_bp, vat_minor, code_fingerprint, code_last4, redemption_id,
                                    card_id, campaign_id)
SELECT 'cancel', %(now)s, program_id, tariff_id, offer_id, product_id, sku,
       partner_id, -1, currency, -face_value_minor, -cost_minor,
       vat_rate_bp, -vat_minor, code_fingerprint, code_last4, redemption_id,
       card_id, campaign_id
  FROM reconciliation_records
 WHERE redemption_id = %(id)s AND type = 'issue'
