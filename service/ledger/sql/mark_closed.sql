-- A period whose documents are stored: closed, with its frozen totals.
UPDATE periods SET status = 'closed', totals = %(totals)s::jsonb, record_count = %(records)s, documents_at = now()
 WHERE id = %(period)s
