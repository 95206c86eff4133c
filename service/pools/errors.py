"""Refusals of code pools: uploads and reservations."""

from __future__ import annotations

from service.kit.http.errors import Problem


class OutOfStock(Problem):
    status, code, title = 409, "out_of_stock", "Out of stock"


class NotACodeProduct(Problem):
    status, code, title = 422, "not_a_code_product", "Not a code product"
