-- An exchange's debit of the card (its row locked by the exchange's transaction): exhausted at zero.
UPDATE cards
   SET balance_minor = balance_minor - %(face)s,
       status = CASE WHEN balance_minor - %(face)s = 0 THEN 'exhausted' ELSE status END
 WHERE id = %(id)s
RETURNING balance_minor, status
