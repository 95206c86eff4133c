-- Each line's offer (its own, else the campaign's default) and face value, from the program's offers
-- that the campaign's tariff may have now (the caller computes them from the catalog).
UPDATE campaign_lines l SET offer_id = p.offer_id, nominal_minor = p.nominal
  FROM unnest(CAST(%(codes)s AS text[]), CAST(%(offer_ids)s AS int[]), CAST(%(nominals)s AS bigint[]))
       AS p(code, offer_id, nominal)
 WHERE l.campaign_id = %(campaign)s AND p.code = coalesce(l.offer_code, %(default_offer)s)
