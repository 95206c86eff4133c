-- Template: takes one code of a product into the status asked for, earliest expiry first, never an
-- expired one; {when}: an SQL condition that must hold for any code to be taken (a redemption's limits,
-- decided in the same statement); {returning}: the taken code's columns.
--
-- Where the last take ended. Every take leaves a dead entry at the head of ix_codes_allocation until
-- VACUUM reaches `codes`; a scan from the head walks all of them (7.9 ms and 2,731 buffers after 261k
-- takes, issue 28). So a database session remembers, per product, the (expiry, id) of its last take in
-- the setting rewards.take_after_<product> ("<chain start epoch>/<expiry>/<id>"), and its next take
-- starts there: a few buffers however many takes VACUUM has not cleaned yet. The setting is
-- transactional (a rolled-back take leaves it as it was) and lives as long as the pooled connection.
--
-- The fallback: when nothing lies after that point, or the chain is older than 60 s, the take scans from
-- the head, as it would without a hint; so the pool is empty only when that scan finds nothing. Codes
-- put back (a cancelled redemption) or uploaded with an earlier expiry than the point are behind it:
-- the 60 s restart is the longest they wait before earliest-expiry-first reaches them again.
--
-- The point's row comparison is the only lower bound of that scan on the expiry: "never an expired one"
-- is folded into it (the later of the point and now; past the whole of now when the point is older). A
-- second bound on the same index column, `expiry > now`, would let PostgreSQL 18 start the scan at now
-- and check the point row by row: from the head again.
--
-- `= coalesce((SELECT ... LIMIT 1), (SELECT ... LIMIT 1))`, not `IN (SELECT ...)`: the planner may turn
-- IN into a semi-join that claims more rows than the LIMIT, and COALESCE runs the second scan (an
-- InitPlan) only when the first found nothing. SKIP LOCKED: parallel takers never wait on each other.
UPDATE codes SET status = %(code_status)s, status_changed_at = %(now)s
 WHERE id = coalesce(
   (SELECT id FROM codes
     WHERE product_id = %(product)s AND status = 'available' AND {when}
       AND (coalesce(expires_at, 'infinity'), id) > (
         SELECT greatest(after[2]::timestamptz, %(now)s::timestamptz),
                CASE WHEN after[2]::timestamptz > %(now)s::timestamptz THEN after[3]::bigint
                     ELSE 9223372036854775807 END
           FROM string_to_array(nullif(current_setting('rewards.take_after_' || %(product)s, true), ''), '/') AS after
          WHERE after[1]::bigint > extract(epoch FROM %(now)s::timestamptz) - 60)
     ORDER BY coalesce(expires_at, 'infinity'), id LIMIT 1 FOR UPDATE SKIP LOCKED),
   (SELECT id FROM codes
     WHERE product_id = %(product)s AND status = 'available'
       AND coalesce(expires_at, 'infinity') > %(now)s AND {when}
     ORDER BY coalesce(expires_at, 'infinity'), id LIMIT 1 FOR UPDATE SKIP LOCKED))
RETURNING {returning},
  set_config('rewards.take_after_' || product_id,
             coalesce((SELECT after[1]
                         FROM string_to_array(nullif(current_setting('rewards.take_after_' || product_id, true), ''), '/') AS after
                        WHERE after[1]::bigint > extract(epoch FROM %(now)s::timestamptz) - 60),
                      extract(epoch FROM %(now)s::timestamptz)::bigint::text)
             || '/' || coalesce(expires_at, 'infinity') || '/' || id, false) AS take_after
