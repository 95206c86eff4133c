-- A line whose redemption exists already (its external id is taken): that redemption is its result.
UPDATE campaign_lines
   SET status = 'done', done_at = %(now)s,
       redemption_id = (SELECT id FROM redemptions
                         WHERE program_id = %(program)s AND NOT sandbox AND external_id = %(external_id)s)
 WHERE campaign_id = %(campaign)s AND line_no = %(line)s
