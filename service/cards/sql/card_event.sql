-- A card's audited event (blocked, unblocked, unlocked, locked, expired) with its reason and key.
INSERT INTO card_events (card_id, event, reason, api_key_id, at)
VALUES (%(card)s, %(event)s, %(reason)s, %(key)s, %(now)s)
