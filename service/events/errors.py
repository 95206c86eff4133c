"""Refusals of the webhook event operations."""

from __future__ import annotations

from service.kit.http.errors import Problem


class WebhookNotConfigured(Problem):
    status, code, title = 409, "webhook_not_configured", "Program has no webhook endpoint"
