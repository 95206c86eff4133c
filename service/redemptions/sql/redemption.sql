-- Redemptions as they are read (RedemptionRow); the caller adds its conditions, order and lock.
SELECT r.id, r.external_id, r.program_id, r.tariff_id, r.offer_id, r.product_id, r.msisdn, r.points,
       r.locale, r.status, r.status_reason, r.resend_count, r.created_at, r.updated_at, r.nominal_minor,
       r.currency, r.reward_last4, r.reward_expires_at, r.code_id, r.card_id, r.first_sent_at, r.sandbox,
       r.link_hash IS NOT NULL AS has_link, r.revealed_at
  FROM redemptions r
