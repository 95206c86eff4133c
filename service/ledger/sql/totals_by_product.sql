-- The sums of the records booked into a program's period, per product, currency, VAT rate and
-- campaign: the on-demand records (no campaign) first, then one line per campaign by its name.
SELECT r.sku, pr.name, pa.code AS partner, pa.name AS partner_name, r.currency, r.vat_rate_bp,
       r.campaign_id::text AS campaign_id, ca.name AS campaign_name,
       count(*) AS records, sum(r.quantity)::bigint AS quantity,
       sum(r.face_value_minor)::bigint AS face_value_minor, sum(r.cost_minor)::bigint AS cost_minor,
       sum(r.vat_minor)::bigint AS vat_minor
  FROM reconciliation_records r
  JOIN products pr ON pr.id = r.product_id
  LEFT JOIN partners pa ON pa.id = r.partner_id
  LEFT JOIN campaigns ca ON ca.id = r.campaign_id
 WHERE r.program_id = %(program)s AND r.booked_period = %(month)s
 GROUP BY r.sku, pr.name, pa.code, pa.name, r.currency, r.vat_rate_bp, r.campaign_id, ca.name
 ORDER BY r.sku, r.currency, r.vat_rate_bp, r.campaign_id IS NOT NULL, ca.name, r.campaign_id
