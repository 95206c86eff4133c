-- A campaign's move made with an API key, in the staff audit log: the key's id, and the staff account
-- of the person who holds it (NULL for a key without an owner).
INSERT INTO staff_audit_log (at, staff_account_id, email, role, action, target, outcome, details)
VALUES (%(at)s, %(staff)s, %(who)s, %(role)s, %(action)s, %(target)s, 'ok', CAST(%(details)s AS jsonb))
