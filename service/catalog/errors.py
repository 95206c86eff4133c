"""Refusals of catalog lookups: a program, offer, tariff, product or partner that does not exist (or
lies outside the caller's scope, which is answered the same way)."""

from __future__ import annotations

from service.kit.http.errors import Problem


class UnknownProgram(Problem):
    status, code, title = 404, "unknown_program", "Unknown program"


class UnknownOffer(Problem):
    status, code, title = 404, "unknown_offer", "Unknown offer"


class UnknownProduct(Problem):
    status, code, title = 404, "unknown_product", "Unknown product"


class UnknownPartner(Problem):
    status, code, title = 404, "unknown_partner", "Unknown partner"


class UnknownTariff(Problem):
    status, code, title = 422, "unknown_tariff", "Unknown tariff"
