-- Codes each pooled product needs for the whole campaign against what its pool holds now.
SELECT p.sku, n.wanted,
       (SELECT count(*) FROM codes k WHERE k.product_id = p.id AND k.status = 'available') AS available
  FROM (SELECT o.product_id, count(*) AS wanted
          FROM campaign_lines l JOIN offers o ON o.id = l.offer_id
         WHERE l.campaign_id = %(campaign)s
         GROUP BY o.product_id) AS n
  JOIN products p ON p.id = n.product_id
 WHERE p.kind = 'code'
