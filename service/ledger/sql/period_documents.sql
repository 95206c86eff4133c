-- A period's closing documents, without their content.
SELECT kind, number, filename, content_type, size, sha256, created_at
  FROM period_documents
 WHERE period_id = %(period)s
 ORDER BY kind
