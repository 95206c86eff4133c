-- Lines of the campaign's rate, shared by every worker (GCRA with a second's burst): granted when
-- they fit before now + 1 second on the campaign's schedule (paced_until), which they move on by
-- lines / rate seconds. No row: wait (pace_wait.sql).
UPDATE campaigns
   SET paced_until = greatest(coalesce(paced_until, %(now)s), %(now)s)
                     + make_interval(secs => CAST(%(lines)s AS float8) / rate_per_second)
 WHERE id = %(id)s
   AND greatest(coalesce(paced_until, %(now)s), %(now)s)
       + make_interval(secs => CAST(%(lines)s AS float8) / rate_per_second) <= %(now)s + interval '1 second'
RETURNING paced_until
