-- A redemption cancelled by request.
UPDATE redemptions SET status = 'cancelled', status_reason = 'cancelled by request', updated_at = %(now)s
 WHERE id = %(id)s
