UPDATE campaigns
   SET status = 'approved', approved_by = %(by)s, approved_at = %(now)s, reserved_minor = %(reserved)s,
       budget_month = %(month)s, updated_at = %(now)s
 WHERE id = %(id)s
