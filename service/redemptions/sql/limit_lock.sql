-- One subscriber's redemptions wait for each other here, so that two parallel ones cannot both pass
-- the limit. The statement that counts them is the next one: in READ COMMITTED its snapshot is taken
-- when it starts, after this lock is granted, so it sees every committed redemption of the subscriber.
SELECT pg_advisory_xact_lock(hashtextextended(%(msisdn)s, 1))
