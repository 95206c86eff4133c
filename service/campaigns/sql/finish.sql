-- A campaign ends: what stays reserved against the budget is what its lines used.
UPDATE campaigns
   SET status = %(status)s, finished_at = %(now)s, updated_at = %(now)s, reserved_minor = %(kept)s
 WHERE id = %(id)s
