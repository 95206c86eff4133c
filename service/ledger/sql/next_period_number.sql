-- The next period's number (gapless across programs, under the numbering lock).
SELECT coalesce(max(number), 0) + 1 FROM periods
