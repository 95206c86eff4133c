-- One line of the campaign's history.
INSERT INTO campaign_moves (campaign_id, at, actor, action, from_status, to_status, details)
VALUES (%(campaign)s, %(at)s, %(actor)s, %(action)s, %(from_status)s, %(to_status)s, CAST(%(details)s AS jsonb))
