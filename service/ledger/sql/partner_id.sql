-- A partner's id by its code.
SELECT id FROM partners WHERE code = %(code)s
