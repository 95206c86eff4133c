-- The pools' stock, one row per active code product (zeros for one with no codes): available (not
-- expired), reserved, issued, voided, expired, and available but expiring by soon. partner: only that
-- partner's products (NULL: all). Index-only for most of it (ix_codes_allocation covers the expiry).
SELECT p.sku, pa.code AS partner, p.low_stock_threshold,
       count(c.id) FILTER (WHERE c.status = 'available' AND (c.expires_at IS NULL OR c.expires_at > now())) AS available,
       count(c.id) FILTER (WHERE c.status = 'reserved') AS reserved,
       count(c.id) FILTER (WHERE c.status = 'issued') AS issued,
       count(c.id) FILTER (WHERE c.status = 'voided') AS voided,
       count(c.id) FILTER (WHERE c.status = 'available' AND c.expires_at <= now()) AS expired,
       count(c.id) FILTER (WHERE c.status = 'available' AND c.expires_at > now()
                                AND c.expires_at <= %(soon)s) AS expiring_soon
  FROM products p
  JOIN partners pa ON pa.id = p.partner_id
  LEFT JOIN codes c ON c.product_id = p.id
 WHERE p.kind = 'code' AND p.active AND (CAST(%(partner)s AS text) IS NULL OR pa.code = %(partner)s)
 GROUP BY p.sku, pa.code, p.low_stock_threshold
 ORDER BY p.sku
