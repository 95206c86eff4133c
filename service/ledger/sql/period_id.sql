-- The period of a program's month, if it has been closed or is closing.
SELECT id FROM periods WHERE program_id = %(program)s AND month = %(month)s
