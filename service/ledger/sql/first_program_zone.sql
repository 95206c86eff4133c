-- The time zone a partner's report is read in: the first program's.
SELECT timezone FROM programs ORDER BY id LIMIT 1
