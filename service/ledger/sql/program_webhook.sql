-- Where a program's webhooks go (NULL: nowhere).
SELECT webhook_url FROM programs WHERE id = %(program)s
