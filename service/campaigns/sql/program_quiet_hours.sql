-- The quiet hours and time zone of a redemption's program.
SELECT p.quiet_hours, p.timezone FROM redemptions r JOIN programs p ON p.id = r.program_id WHERE r.id = %(id)s
