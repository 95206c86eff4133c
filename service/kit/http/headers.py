"""The security headers of every HTML page the service serves (the staff console, the API's
documentation): nothing is cached, nothing frames the page, and its CSP lets it load scripts, styles,
images and requests from this origin only (inline styles allowed: the pages' libraries set them)."""

from __future__ import annotations

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}
