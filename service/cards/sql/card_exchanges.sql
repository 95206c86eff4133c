-- A card's exchanges, oldest first.
SELECT e.id, pr.sku, pa.code AS partner, e.amount_minor, c.last4, e.created_at, e.channel
  FROM exchanges e
  JOIN products pr ON pr.id = e.product_id
  JOIN partners pa ON pa.id = e.partner_id
  JOIN codes c ON c.id = e.code_id
 WHERE e.card_id = %(id)s
 ORDER BY e.created_at, e.id
