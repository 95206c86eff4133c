-- Template: the INSERT (or CTE body) of a new card, RETURNING what a redemption names it by; no row
-- when {when} is false or the number is already taken (the caller draws another). {sandbox}: true or
-- false. Parameters: product, currency, nominal, now and the new_card() values.
INSERT INTO cards (product_id, number_fingerprint, number_enc, last4, pin_enc, key_id, currency,
                   nominal_minor, balance_minor, expires_at, sandbox, created_at)
SELECT %(product)s, %(card_fingerprint)s, %(card_number_enc)s, %(card_last4)s, %(card_pin_enc)s, %(card_key_id)s,
       %(currency)s, %(nominal)s, %(nominal)s, %(card_expires_at)s, {sandbox}, %(now)s
 WHERE {when}
ON CONFLICT (number_fingerprint) DO NOTHING
RETURNING id, last4, number_fingerprint AS fingerprint, expires_at
