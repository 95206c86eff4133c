"""The console shows what a holder did on the reward page: when the code was shown, the one-time
codes, and an online exchange in the redemption's timeline and in the card's history."""

from __future__ import annotations

import re

from tests.conftest import import_codes_for, post_redemption
from tests.console.helpers import signed_in
from tests.test_holders import ask, card_reward, confirm, deliver_notices, form_of, otp_from, path_of
from tests.test_holders import public_url as public_url  # noqa: F401  (the autouse fixture)


def test_the_timeline_shows_when_the_code_was_shown_on_the_page(client, keys, staff):
    import_codes_for("ARAY-CINEMA-2000", 2)
    made = post_redemption(client, keys).json()
    path = path_of(made["reward_url"])
    client.post(path + "/show", data={"form": form_of(client.get(path).text)})
    signed_in(client, staff.support)
    html = client.get(f"/console/redemptions/{made['id']}?lang=en").text
    assert len(re.findall(r'class="page-event page-code_shown"', html)) == 1
    assert "Код показан на странице подарка" in html


def test_the_timeline_and_the_card_history_show_an_online_exchange(client, keys, staff, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    code = otp_from(deliver_notices(tmp_path)[0])
    confirm(client, path, asked.text, "000000" if code != "000000" else "111111")
    confirm(client, path, asked.text, code)
    signed_in(client, staff.support)
    html = client.get(f"/console/redemptions/{card.redemption_id}").text
    events = re.findall(r'class="page-event page-(\w+)"', html)
    assert events == ["otp_sent", "otp_wrong", "exchanged"]
    assert "Обмен онлайн на странице подарка (ARAY-CERT-1000)" in html
    (line,) = re.findall(r'<li class="card-exchange">(.*?)</li>', html, re.S)
    assert "channel-online" in line and "онлайн" in line
