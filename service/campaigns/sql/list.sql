-- The campaigns of the given programs (all when NULL), newest first (uuid7 ids are time-ordered),
-- after the cursor's id, of one status when given.
SELECT id, program_id, tariff_id, offer_id, name, currency, locale, budget_cap_minor, starts_at,
       rate_per_second, status, file_name, file_sha256, file_format, file_encoding, file_separator,
       line_count, problem_count, total_minor, validated_at, needs_approval, submitted_by, submitted_at,
       submitted_sha256, submitted_lines, submitted_total_minor, approved_by, approved_at, rejected_by,
       rejected_at, rejection_reason, reserved_minor, budget_month, started_at, finished_at, created_by,
       api_key_id, created_at, updated_at
  FROM campaigns
 WHERE (CAST(%(programs)s AS int[]) IS NULL OR program_id = ANY(CAST(%(programs)s AS int[])))
   AND (CAST(%(before)s AS uuid) IS NULL OR id < CAST(%(before)s AS uuid))
   AND (CAST(%(status)s AS text) IS NULL OR status = CAST(%(status)s AS text))
 ORDER BY id DESC
 LIMIT %(limit)s
