-- A program's webhook secrets in force at `now`: without an end, or in the overlap after a
-- rotation. The current one (the newest) first.
SELECT secret_enc, key_id
FROM program_webhook_secrets
WHERE program_id = %(program_id)s AND (expires_at IS NULL OR expires_at > %(now)s)
ORDER BY created_at DESC, id DESC
