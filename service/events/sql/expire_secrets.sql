-- A rotation: the secrets in force end at `until` (the end of the overlap), those ending sooner
-- keep their end.
UPDATE program_webhook_secrets SET expires_at = %(until)s
WHERE program_id = %(program_id)s AND (expires_at IS NULL OR expires_at > %(until)s)
