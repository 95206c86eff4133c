-- Template: the one writer of outbox rows, one row of a job per row of {source} (a table expression,
-- e.g. a CTE of the caller's statement). {queue}, {actor}: the job's, as SQL literals; {payload}: the
-- JSON payload expression; {message_id}: uuid7() unless the caller has one; {created_at}: the row's
-- time expression (by default the parameter outbox_now). {trace_column} and {trace_value}: the W3C
-- traceparent column and its parameter while tracing is on, else empty. {order_by}: empty, or an
-- ORDER BY of the source's rows.
INSERT INTO outbox (message_id, queue, actor, payload, created_at{trace_column})
SELECT {message_id}, {queue}, {actor}, {payload}, {created_at}{trace_value}
  FROM {source}{order_by}
