"""HTTP: problem+json errors, strict parsing, paging, health endpoints."""
