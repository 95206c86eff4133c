-- One closing document of a closed period of a program.
SELECT d.filename, d.content_type, d.size, d.sha256, d.id AS document_id
  FROM periods p JOIN period_documents d ON d.period_id = p.id
 WHERE p.program_id = %(program)s AND p.month = %(month)s AND d.kind = %(kind)s AND p.status = 'closed'
