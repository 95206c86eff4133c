-- A partner's currency: that of its first product.
SELECT currency FROM products WHERE partner_id = %(partner)s ORDER BY id LIMIT 1
