-- Retention: up to `limit` events delivered or given up before `before`, oldest first
-- (ix_webhook_events_created), locked; those another pod's batch holds are skipped. Pending events
-- are never taken.
SELECT id
FROM webhook_events
WHERE created_at < %(before)s AND coalesce(delivered_at, given_up_at) < %(before)s
ORDER BY created_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
