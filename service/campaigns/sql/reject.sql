UPDATE campaigns
   SET status = 'draft', rejected_by = %(by)s, rejected_at = %(now)s, rejection_reason = %(reason)s,
       needs_approval = NULL, submitted_by = NULL, submitted_at = NULL, submitted_sha256 = NULL,
       submitted_lines = NULL, submitted_total_minor = NULL, updated_at = %(now)s
 WHERE id = %(id)s
