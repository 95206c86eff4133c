-- The certificate of one of a partner's exchanges, encrypted.
SELECT c.code_enc, c.pin_enc, c.key_id
  FROM exchanges e JOIN codes c ON c.id = e.code_id JOIN partners p ON p.id = e.partner_id
 WHERE e.id = %(id)s AND p.code = %(partner)s
