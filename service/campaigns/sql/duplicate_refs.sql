-- A reference that repeats an earlier line's: each repetition is a report line naming the first.
INSERT INTO campaign_problems (campaign_id, line_no, code, message)
SELECT %(campaign)s, d.line_no, 'duplicate_ref', 'reference ' || d.ref || ' repeats line ' || d.first
  FROM (SELECT line_no, ref, min(line_no) OVER (PARTITION BY ref) AS first
          FROM campaign_lines WHERE campaign_id = %(campaign)s) AS d
 WHERE d.line_no <> d.first
