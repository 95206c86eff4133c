-- The event log's rows: an event, its program, its status and its last attempt. The caller appends
-- its WHERE (the filters of a list, or one id) and its ORDER BY.
SELECT
    e.id,
    e.type,
    p.code AS program,
    e.sandbox,
    e.created_at,
    CASE
        WHEN e.delivered_at IS NOT NULL THEN 'delivered'
        WHEN e.given_up_at IS NOT NULL THEN 'given_up'
        ELSE 'pending'
    END AS status,
    e.delivered_at,
    e.given_up_at,
    e.replays,
    e.payload,
    a.attempts,
    a.attempted_at,
    a.status_code,
    a.error,
    a.duration_ms,
    a.next_attempt_at
FROM webhook_events e
JOIN programs p ON p.id = e.program_id
LEFT JOIN LATERAL (
    SELECT count(*) OVER () AS attempts, attempted_at, status_code, error, duration_ms, next_attempt_at
    FROM webhook_attempts
    WHERE event_id = e.id
    ORDER BY attempted_at DESC, id DESC
    LIMIT 1
) a ON true
