-- A report line about the campaign as a whole.
INSERT INTO campaign_problems (campaign_id, line_no, code, message) VALUES (%(campaign)s, NULL, %(code)s, %(message)s)
