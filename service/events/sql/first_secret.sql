-- A program's first webhook secret (the one earlier releases derived), unless it has one already.
-- The caller holds the program's advisory lock, so two first calls store one secret.
INSERT INTO program_webhook_secrets (program_id, secret_enc, key_id, created_at)
SELECT %(program_id)s, %(secret_enc)s, %(key_id)s, %(now)s
WHERE NOT EXISTS (SELECT 1 FROM program_webhook_secrets WHERE program_id = %(program_id)s)
