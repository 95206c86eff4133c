-- How many records booked into a program's period happened in an earlier month (one already closed
-- when they were written), in the program's time zone.
SELECT count(*)
  FROM reconciliation_records r JOIN programs p ON p.id = r.program_id
 WHERE r.program_id = %(program)s AND r.booked_period = %(month)s
   AND date_trunc('month', r.occurred_at AT TIME ZONE p.timezone)::date <> r.booked_period
