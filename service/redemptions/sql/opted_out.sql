-- A campaign's grant to a subscriber who opted out of the program's bulk SMS: no SMS was queued, so
-- the redemption ends here, its reward kept (resend and the reward page's link still work).
UPDATE redemptions SET status = 'failed', status_reason = 'bulk_opt_out', updated_at = %(now)s
 WHERE id = %(id)s
