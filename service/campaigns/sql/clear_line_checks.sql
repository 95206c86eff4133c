UPDATE campaign_lines SET offer_id = NULL, nominal_minor = NULL WHERE campaign_id = %(campaign)s
