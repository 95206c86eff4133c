-- The same subscriber twice with the same offer (a reference of its own does not make it another
-- grant): each repetition is a report line naming the first. The phone is shown masked.
INSERT INTO campaign_problems (campaign_id, line_no, code, message)
SELECT %(campaign)s, d.line_no, 'duplicate_line',
       'phone ' || left(d.msisdn, 2) || ' ' || substr(d.msisdn, 3, 3) || ' …: the same phone and offer as line ' || d.first
  FROM (SELECT line_no, msisdn, min(line_no) OVER (PARTITION BY msisdn, coalesce(offer_code, '')) AS first
          FROM campaign_lines WHERE campaign_id = %(campaign)s) AS d
 WHERE d.line_no <> d.first
