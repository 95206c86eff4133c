SELECT msisdn FROM bulk_opt_outs WHERE program_id = %(program)s ORDER BY msisdn
