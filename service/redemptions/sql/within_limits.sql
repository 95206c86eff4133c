-- Template (the CTE lim of reserve.sql): whether the subscriber is within the offer's limits per day
-- and per month, counted in the program's time zone; a limit left NULL holds. {sandbox}: true or false.
SELECT coalesce(%(limit_day)s::int > count(*) FILTER (WHERE created_at >= %(day)s), true)
       AND coalesce(%(limit_month)s::int > count(*), true) AS within
  FROM redemptions
 WHERE msisdn = %(msisdn)s AND offer_id = %(offer)s AND created_at >= %(month)s
   AND status <> 'cancelled' AND sandbox = {sandbox}
