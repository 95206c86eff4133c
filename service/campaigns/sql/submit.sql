-- What the approver will see and approve: the file's hash, its line count and value, frozen.
UPDATE campaigns
   SET status = 'submitted', needs_approval = %(needs)s, submitted_by = %(by)s, submitted_at = %(now)s,
       submitted_sha256 = file_sha256, submitted_lines = line_count, submitted_total_minor = total_minor,
       rejected_by = NULL, rejected_at = NULL, rejection_reason = NULL, updated_at = %(now)s
 WHERE id = %(id)s
