-- The events of a delivery pack, with their program's endpoint and the attempts already made in
-- their current 24-hour window (from their creation, or their last replay).
SELECT
    e.id,
    e.payload,
    coalesce(e.deliver_from, e.created_at) AS window_from,
    e.delivered_at,
    e.given_up_at,
    p.webhook_url,
    p.code AS program_code,
    p.id AS program_id,
    (
        SELECT count(*) FROM webhook_attempts a
        WHERE a.event_id = e.id AND a.attempted_at >= coalesce(e.deliver_from, e.created_at)
    ) AS attempts
FROM webhook_events e
JOIN programs p ON p.id = e.program_id
WHERE e.id = ANY(%(ids)s)
