-- Template: what says whether anybody has used a card; {lock}: FOR UPDATE or nothing.
SELECT status, balance_minor, nominal_minor FROM cards WHERE id = %(id)s {lock}
