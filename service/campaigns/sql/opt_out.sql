INSERT INTO bulk_opt_outs (program_id, msisdn)
SELECT %(program)s, m FROM unnest(CAST(%(msisdns)s AS text[])) AS m
ON CONFLICT DO NOTHING
