"""Prometheus metrics. Labels are route templates, never raw paths (which may hold phone numbers)."""
from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter("rewards_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("rewards_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
CODES_IMPORTED = Counter("rewards_codes_imported_total", "Codes accepted into pools", ["sku"])
