-- A period as `closing`, with its number and its document numbers.
INSERT INTO periods (program_id, month, status, number, act_number, registry_number, closed_at, closed_by)
VALUES (%(program)s, %(month)s, 'closing', %(number)s, %(act_number)s, %(registry_number)s, %(closed_at)s,
        %(closed_by)s)
RETURNING id
