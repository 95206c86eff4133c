INSERT INTO campaigns (id, program_id, tariff_id, offer_id, name, currency, locale, budget_cap_minor,
                       starts_at, rate_per_second, status, created_by, api_key_id, created_at, updated_at)
VALUES (%(id)s, %(program)s, %(tariff)s, %(offer)s, %(name)s, %(currency)s, %(locale)s, %(cap)s,
        %(starts_at)s, %(rate)s, 'draft', %(by)s, %(api_key)s, %(now)s, %(now)s)
