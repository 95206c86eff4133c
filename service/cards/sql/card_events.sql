-- A card's audited events, oldest first, with the key that caused each.
SELECT ev.event, ev.reason, k.key_id, ev.at
  FROM card_events ev LEFT JOIN api_keys k ON k.id = ev.api_key_id
 WHERE ev.card_id = %(id)s
 ORDER BY ev.at, ev.id
