-- A replay: the event is pending again, with a new 24-hour window of retries from `now`.
UPDATE webhook_events
SET delivered_at = NULL, given_up_at = NULL, deliver_from = %(now)s, replays = replays + 1
WHERE id = %(id)s
