-- One chunk (1 MiB at most) of a closing document.
INSERT INTO period_document_chunks (document_id, seq, data) VALUES (%(document)s, %(seq)s, %(data)s)
