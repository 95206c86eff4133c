-- Whether a product of this SKU exists.
SELECT 1 FROM products WHERE sku = %(sku)s
