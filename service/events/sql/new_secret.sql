INSERT INTO program_webhook_secrets (program_id, secret_enc, key_id, created_at)
VALUES (%(program_id)s, %(secret_enc)s, %(key_id)s, %(now)s)
