"""Refusals of the SMS gateway's receipt callback."""

from __future__ import annotations

from service.kit.http.errors import Problem


class ReceiptSecretInvalid(Problem):
    status, code, title = 401, "unauthorized", "Unauthorized"


class ReceiptNotYetKnown(Problem):
    status, code, title = 503, "retry_later", "Retry later"
