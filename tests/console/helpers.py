"""Staff accounts and signed-in clients for the console tests. Accounts are made by the same domain
function as `rewards staff create`; sign-in goes through the real form (CSRF cookie and token)."""

from __future__ import annotations

import re
from dataclasses import dataclass

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class StaffAccounts:
    support: str = "support@operator.kz"
    support_business: str = "biz-support@operator.kz"  # scoped to the business program
    finance: str = "finance@operator.kz"
    partner: str = "cashier@aray.kz"  # aray-cinema
    other_partner: str = "cashier@kitap.kz"  # kitap-books
    admin: str = "admin@operator.kz"


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def sign_in(client, email: str, password: str = PASSWORD, next_path: str = ""):
    """Posts the sign-in form as a browser would; returns the response (a 303 on success)."""
    form = client.get("/console/login")
    return client.post(
        "/console/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text), "next": next_path},
        follow_redirects=False,
    )


def signed_in(client, email: str) -> str:
    """Signs in and returns the session's CSRF token (read from a page's form)."""
    response = sign_in(client, email)
    assert response.status_code == 303, response.text
    page = client.get("/console/dashboard")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
