-- The kinds of reward the campaign's lines give (each needs its Kazakh SMS template).
SELECT DISTINCT p.kind
  FROM campaign_lines l JOIN offers o ON o.id = l.offer_id JOIN products p ON p.id = o.product_id
 WHERE l.campaign_id = %(campaign)s
