-- What producing a period's documents needs of it.
SELECT status, month, act_number, registry_number, closed_at FROM periods WHERE id = %(period)s
