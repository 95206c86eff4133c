-- A program by its code, as the month close needs it.
SELECT id, code, name, timezone, currency FROM programs WHERE code = %(code)s
