"""Refusals of a redemption, its cancellation and its resend. A refusal is stored with the request's
Idempotency-Key and replays like a success."""

from __future__ import annotations

from service.kit.http.errors import Problem


class OfferInactive(Problem):
    status, code, title = 409, "offer_inactive", "Offer not active"


class TariffNotEligible(Problem):
    status, code, title = 422, "tariff_not_eligible", "Tariff not eligible"


class PointsMismatch(Problem):
    status, code, title = 422, "points_mismatch", "Points do not match the price"


class LimitExceeded(Problem):
    status, code, title = 409, "limit_exceeded", "Limit reached"


class BudgetExceeded(Problem):
    status, code, title = 409, "budget_exceeded", "Budget exceeded"


class DuplicateExternalId(Problem):
    status, code, title = 409, "duplicate_external_id", "Duplicate external_id"


class NotCancellable(Problem):
    status, code, title = 409, "not_cancellable", "Not cancellable"


class NotResendable(Problem):
    status, code, title = 409, "not_resendable", "Not resendable"


class ResendLimitReached(Problem):
    status, code, title = 409, "resend_limit_reached", "Resend limit reached"
