-- Template: an exchange (the CTE e) and its record ({record}: the ledger's exchange_record.sql), in
-- one statement.
WITH e AS (
  INSERT INTO exchanges (id, card_id, product_id, partner_id, code_id, amount_minor, created_at, api_key_id,
                         channel)
  VALUES (%(id)s, %(card)s, %(product)s, %(partner)s, %(code)s, %(amount)s, %(now)s, %(key)s,
          %(channel)s)
  RETURNING id
)
{record}
