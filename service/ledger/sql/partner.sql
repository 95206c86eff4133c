-- A partner by its code.
SELECT id, code, name FROM partners WHERE code = %(code)s
