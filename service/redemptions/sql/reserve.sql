-- Template: the statement of one redemption. lim: whether the subscriber is within the offer's limits
-- (within_limits.sql, or plain true); c: the reward, only when within (a pooled code SKIP LOCKED, a
-- minted card, or a sandbox test code); r: the redemption (nothing on a duplicate external_id), which
-- returns {returning} for its issue record (rec, the ledger's issue_record.sql; a plain SELECT in the
-- sandbox); sms: its first SMS in the outbox. The one row says which of these happened.
-- {code_id}, {card_id}: c.id or NULL; {sandbox}: true or false. {checked_returning} and {guard}: empty,
-- except in bench/ceiling.py's checked statement, which fails unless every write touched a row.
WITH lim AS ({limits}),
c AS ({reward}),
r AS (
  INSERT INTO redemptions (id, program_id, tariff_id, offer_id, product_id, external_id, msisdn, locale,
                           points, currency, nominal_minor, code_id, card_id, reward_last4,
                           reward_expires_at, api_key_id, sandbox, link_hash, campaign_id, created_at, updated_at)
  SELECT %(id)s, %(program)s, %(tariff)s, %(offer)s, %(product)s, %(external_id)s, %(msisdn)s, %(locale)s,
         %(points)s, %(currency)s, %(nominal)s, {code_id}, {card_id}, c.last4,
         c.expires_at, %(api_key)s, {sandbox}, %(link_hash)s, %(campaign)s, %(now)s, %(now)s
    FROM c
  ON CONFLICT (program_id, sandbox, external_id) DO NOTHING
  RETURNING {returning}
),
rec AS ({record}{checked_returning}),
sms AS ({sms}{checked_returning})
SELECT (SELECT within FROM lim) AS within, c.last4, c.expires_at, (SELECT count(*) FROM r) > 0 AS inserted{guard}
  FROM (SELECT 1) AS one LEFT JOIN c ON true
