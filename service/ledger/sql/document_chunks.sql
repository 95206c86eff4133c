-- A closing document's content, chunk by chunk.
SELECT data FROM period_document_chunks WHERE document_id = %(document)s ORDER BY seq
