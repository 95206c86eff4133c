-- The sums of the records booked into a program's period, per record type and currency.
SELECT type, currency, count(*) AS records, sum(quantity)::bigint AS quantity,
       sum(face_value_minor)::bigint AS face_value_minor, sum(cost_minor)::bigint AS cost_minor,
       sum(vat_minor)::bigint AS vat_minor
  FROM reconciliation_records
 WHERE program_id = %(program)s AND booked_period = %(month)s
 GROUP BY type, currency
 ORDER BY array_position(ARRAY['issue', 'cancel', 'exchange', 'breakage'], type), currency
