-- A redemption whose reward is sent again: its send number; a failed one is accepted again.
UPDATE redemptions
   SET resend_count = %(send)s, updated_at = %(now)s,
       status = CASE WHEN status = 'failed' THEN 'accepted' ELSE status END,
       status_reason = CASE WHEN status = 'failed' THEN NULL ELSE status_reason END
 WHERE id = %(id)s
