-- A closing document's row (immutable once written); its content follows in chunks.
INSERT INTO period_documents (period_id, kind, number, filename, content_type, size, sha256)
VALUES (%(period)s, %(kind)s, %(number)s, %(filename)s, %(content_type)s, %(size)s, %(sha256)s)
RETURNING id
