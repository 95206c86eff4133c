DELETE FROM bulk_opt_outs WHERE program_id = %(program)s AND msisdn = ANY(CAST(%(msisdns)s AS text[]))
