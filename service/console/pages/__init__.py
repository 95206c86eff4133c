"""The console's pages, one module per desk: `session` (sign-in, sign-out, language), `support`,
`partner` (stock, card desk), `finance` (month close, reconciliation, audit log), `campaigns` (bulk
rewards from a file, maker-checker) and `dashboard` (landing page, live figures). Each has its own
router; service.console.mount includes them. A page gets its staff member, role check and CSRF check
from service.console.deps."""
