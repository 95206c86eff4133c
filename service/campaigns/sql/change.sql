-- A change: back to draft, the submission and any approval and reservation undone.
UPDATE campaigns
   SET name = %(name)s, budget_cap_minor = %(cap)s, starts_at = %(starts_at)s, rate_per_second = %(rate)s,
       status = 'draft', needs_approval = NULL, submitted_by = NULL, submitted_at = NULL,
       submitted_sha256 = NULL, submitted_lines = NULL, submitted_total_minor = NULL, approved_by = NULL,
       approved_at = NULL, reserved_minor = 0, budget_month = NULL, updated_at = %(now)s
 WHERE id = %(id)s
