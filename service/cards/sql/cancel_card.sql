-- Cancelling a card's redemption cancels the card and empties it.
UPDATE cards SET status = 'cancelled', balance_minor = 0 WHERE id = %(id)s
