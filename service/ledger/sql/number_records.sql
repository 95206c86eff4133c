-- Numbers the period's records after the program's last number, in registry order. Only committed
-- records exist for it (the period is closed to new bookings), so a number is never drawn for a
-- request that is then refused, and it rolls back with the documents if they fail.
INSERT INTO registry_entries (record_id, program_id, period_id, number)
SELECT r.id, r.program_id, %(period)s,
       (SELECT coalesce(max(e.number), 0) FROM registry_entries e WHERE e.program_id = %(program)s)
       + row_number() OVER (ORDER BY r.occurred_at, r.id)
  FROM reconciliation_records r
 WHERE r.program_id = %(program)s AND r.booked_period = %(month)s
   AND NOT EXISTS (SELECT 1 FROM registry_entries e WHERE e.record_id = r.id)
 ORDER BY r.occurred_at, r.id
