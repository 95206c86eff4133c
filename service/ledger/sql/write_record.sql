-- A record in a statement of its own, not tied to a redemption (breakage; the tests' records).
INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,
                                    partner_id, quantity, currency, face_value_minor, cost_minor,
                                    vat_rate_bp, vat_minor, code_fingerprint, code_last4, redemption_id,
                                    card_id)
VALUES (%(type)s, %(occurred_at)s, %(program)s, %(tariff)s, %(offer)s, %(product)s,
        %(sku)s, %(partner)s, 1, %(currency)s, %(face)s, %(cost)s,
        %(rate)s, %(vat)s, %(fingerprint)s, %(last4)s, NULL,
        %(card)s)
RETURNING id
