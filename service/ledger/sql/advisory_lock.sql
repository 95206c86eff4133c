-- A transaction's advisory lock of a class (PERIOD_LOCK, DOCS_LOCK, REGISTRY_LOCK) and a key.
SELECT pg_advisory_xact_lock(%(class)s, %(key)s)
