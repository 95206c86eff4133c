-- The upload's result: the file, and what validation found in it.
UPDATE campaigns c
   SET file_name = %(file_name)s, file_sha256 = %(sha)s, file_format = %(format)s,
       file_encoding = %(encoding)s, file_separator = %(separator)s,
       line_count = (SELECT count(*) FROM campaign_lines l WHERE l.campaign_id = c.id),
       total_minor = coalesce((SELECT sum(nominal_minor) FROM campaign_lines l WHERE l.campaign_id = c.id), 0),
       problem_count = (SELECT count(*) FROM campaign_problems p WHERE p.campaign_id = c.id),
       validated_at = %(now)s, updated_at = %(now)s, rejected_by = NULL, rejected_at = NULL,
       rejection_reason = NULL
 WHERE id = %(id)s
