-- The attempts of a delivery pack, from one JSON document (kit.db.engine.batch).
INSERT INTO webhook_attempts (event_id, attempted_at, status_code, error, duration_ms, next_attempt_at)
SELECT event_id, %(now)s, status_code, error, duration_ms, next_attempt_at
FROM jsonb_to_recordset(%(attempts)s::jsonb)
    AS a(event_id uuid, status_code int, error text, duration_ms int, next_attempt_at timestamptz)
