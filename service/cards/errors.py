"""Refusals of card verification, exchange and support actions."""

from __future__ import annotations

from service.kit.http.errors import Problem


class CardNotFound(Problem):
    """A redemption with no card (support routes). A card number is never answered this way: an
    unknown number is WrongCardOrPin, like a wrong PIN."""

    status, code, title = 404, "card_not_found", "Card not found"


class WrongCardOrPin(Problem):
    """An unknown card number or a wrong PIN: one answer for both, so that it tells nothing about
    which numbers exist (`remaining_attempts`: before this client's delays start)."""

    status, code, title = 422, "wrong_card_or_pin", "Wrong card number or PIN"


class CardLocked(Problem):
    """`lock`: `client` (this client waits: its wrong PINs on the number) or `card` (locked for
    everyone after wrong PINs from several clients; support can lift it); `locked_until`."""

    status, code, title = 423, "card_locked", "Card locked"


class CardBlocked(Problem):
    status, code, title = 423, "card_blocked", "Card blocked"


class CardCancelled(Problem):
    status, code, title = 409, "card_cancelled", "Card cancelled"


class CardExpired(Problem):
    status, code, title = 409, "card_expired", "Card expired"


class CardExhausted(Problem):
    status, code, title = 409, "card_exhausted", "Card exhausted"


class NotExchangeable(Problem):
    status, code, title = 422, "not_exchangeable", "Not exchangeable"


class InsufficientBalance(Problem):
    status, code, title = 409, "insufficient_balance", "Insufficient balance"


class CardNotBlockable(Problem):
    status, code, title = 409, "card_not_blockable", "Card not blockable"


class CardNotBlocked(Problem):
    status, code, title = 409, "card_not_blocked", "Card not blocked"


class CommittedRefusal(Problem):
    """A refusal whose side effects (a wrong PIN counted, a lock set, a counter reset) must be
    committed, not rolled back with the transaction: the caller commits first, then answers with
    `problem`. It is itself the same problem, so a caller that only knows Problem answers right."""

    def __init__(self, problem: Problem):
        super().__init__(problem.detail, errors=problem.errors, headers=problem.headers, **problem.extensions)
        self.status, self.code, self.title = problem.status, problem.code, problem.title
        self.problem = problem
