-- A campaign's move made with an API key, in the staff audit log (no staff account: the key's name).
INSERT INTO staff_audit_log (at, staff_account_id, email, role, action, target, outcome, details)
VALUES (%(at)s, NULL, %(who)s, %(role)s, %(action)s, %(target)s, 'ok', CAST(%(details)s AS jsonb))
