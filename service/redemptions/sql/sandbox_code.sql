-- Template (the CTE c of reserve.sql): a sandbox code reward, a test code from no pool (its last 4
-- computed by the caller); {when}: the condition to reserve it at all.
SELECT NULL::bigint AS id, %(sandbox_last4)s::varchar AS last4, NULL::timestamptz AS expires_at
 WHERE {when}
