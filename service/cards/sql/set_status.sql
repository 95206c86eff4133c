-- Support blocks or unblocks a card.
UPDATE cards SET status = %(status)s WHERE id = %(id)s
