-- How long until the campaign's schedule has room for the lines again, in seconds.
SELECT greatest(0, extract(epoch FROM (paced_until + make_interval(secs => CAST(%(lines)s AS float8) / rate_per_second)
                                       - interval '1 second' - %(now)s)))
  FROM campaigns WHERE id = %(id)s
