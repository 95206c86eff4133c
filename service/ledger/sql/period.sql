-- A program's month as the period views show it (no row: the month is open).
SELECT id, status, act_number, registry_number, closed_at, closed_by, record_count, totals
  FROM periods
 WHERE program_id = %(program)s AND month = %(month)s
