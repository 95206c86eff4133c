-- A batch of webhook events, from one JSON document (kit.db.engine.batch): one statement whatever
-- the number of events.
INSERT INTO webhook_events (id, program_id, redemption_id, sandbox, type, payload, created_at)
SELECT id, program_id, redemption_id, sandbox, type, payload, %(now)s
FROM jsonb_to_recordset(%(events)s::jsonb)
    AS e(id uuid, program_id int, redemption_id uuid, sandbox boolean, type varchar, payload jsonb)
