"""The holders' words in Russian (the default), Kazakh and English: the pages, the one-time code and
certificate SMS, and the expiry reminder; how the pages pick a language and write money and dates."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from service.kit.values.money import exponent

LOCALES = ("ru", "kk", "en")
DEFAULT_LOCALE = "ru"
NBSP = "\u00a0"
CURRENCY_SIGNS = {"KZT": "₸"}

# key: (ru, kk, en). A test checks that every key a template uses is here.
MESSAGES: dict[str, tuple[str, str, str]] = {
    "lang.name": ("Русский", "Қазақша", "English"),
    "lang.switch": ("Язык", "Тіл", "Language"),
    "page.title": ("Ваш подарок", "Сіздің сыйлығыңыз", "Your reward"),
    "page.card_title": ("Подарочная карта", "Сыйлық картасы", "Gift card"),
    "page.footer": (
        "Не пересылайте эту ссылку: по ней открывается ваш подарок.",
        "Бұл сілтемені ешкімге жібермеңіз: ол сіздің сыйлығыңызды ашады.",
        "Do not forward this link: it opens your reward.",
    ),
    "code.face_value": ("Номинал", "Номиналы", "Face value"),
    "code.expires": ("Действует до", "Жарамдылық мерзімі", "Valid until"),
    "code.no_expiry": ("Бессрочно", "Мерзімсіз", "No expiry"),
    "code.hidden": (
        "Код скрыт. Нажмите «Показать код», когда будете готовы им воспользоваться.",
        "Код жасырулы. Қолдануға дайын болғанда «Кодты көрсету» түймесін басыңыз.",
        "The code is hidden. Tap \u201cShow the code\u201d when you are ready to use it.",
    ),
    "code.show": ("Показать код", "Кодты көрсету", "Show the code"),
    "code.code": ("Код", "Код", "Code"),
    "code.pin": ("ПИН", "ПИН", "PIN"),
    "code.copy": ("Скопировать код", "Кодты көшіру", "Copy the code"),
    "code.copied": ("Код скопирован", "Код көшірілді", "Code copied"),
    "code.barcode": ("Штрихкод для кассы", "Кассаға арналған штрихкод", "Barcode for the till"),
    "code.qr": ("QR-код для кассы", "Кассаға арналған QR-код", "QR code for the till"),
    "code.revealed": ("Ваш код: {code}", "Сіздің кодыңыз: {code}", "Your code: {code}"),
    "section.how": ("Как воспользоваться", "Қалай пайдалану керек", "How to use it"),
    "section.terms": ("Условия", "Шарттар", "Terms"),
    "section.where": ("Где принимают", "Қай жерде қабылданады", "Where to use it"),
    "section.website": ("Сайт партнёра", "Серіктестің сайты", "Partner's website"),
    "card.balance": ("Баланс", "Балансы", "Balance"),
    "card.nominal": ("Номинал карты", "Карта номиналы", "Card value"),
    "card.number": ("Карта", "Карта", "Card"),
    "card.status": ("Статус", "Күйі", "Status"),
    "card.status.active": ("активна", "белсенді", "active"),
    "card.status.exhausted": ("баланс исчерпан", "балансы таусылды", "used up"),
    "card.status.expired": ("срок истёк", "мерзімі өтті", "expired"),
    "card.status.blocked": ("заблокирована", "бұғатталған", "blocked"),
    "card.status.cancelled": ("отменена", "жойылды", "cancelled"),
    "card.history": ("История обменов", "Айырбастау тарихы", "Exchange history"),
    "card.no_history": ("Обменов ещё не было.", "Әлі айырбастау болған жоқ.", "No exchanges yet."),
    "card.catalog": ("Обменять на сертификат", "Сертификатқа айырбастау", "Exchange for a certificate"),
    "card.catalog_hint": (
        "Выберите сертификат: мы пришлём код подтверждения по SMS на номер, на который пришла карта.",
        "Сертификатты таңдаңыз: растау кодын карта келген нөмірге SMS арқылы жібереміз.",
        "Pick a certificate: we will text a confirmation code to the phone the card was sent to.",
    ),
    "card.exchange": ("Обменять", "Айырбастау", "Exchange"),
    "card.exchange_for": ("Обменять на {name}", "{name} сертификатына айырбастау", "Exchange for {name}"),
    "card.unaffordable": ("Недостаточно средств", "Қаражат жеткіліксіз", "Not enough balance"),
    "card.show_certificate": ("Показать сертификат", "Сертификатты көрсету", "Show the certificate"),
    "card.channel.online": ("на сайте", "сайтта", "online"),
    "card.channel.partner": ("у партнёра", "серіктесте", "at the partner"),
    "otp.title": ("Подтверждение обмена", "Айырбастауды растау", "Confirm the exchange"),
    "otp.sent": (
        "Мы отправили код подтверждения на номер {phone}. Он действует 5 минут.",
        "Растау кодын {phone} нөміріне жібердік. Ол 5 минут жарамды.",
        "We have texted a confirmation code to {phone}. It is valid for 5 minutes.",
    ),
    "otp.what": (
        "Вы обмениваете {amount} на «{name}».",
        "Сіз {amount} соманы «{name}» сертификатына айырбастайсыз.",
        "You are exchanging {amount} for \u201c{name}\u201d.",
    ),
    "otp.label": ("Код из SMS", "SMS-тегі код", "Code from the SMS"),
    "otp.confirm": ("Подтвердить", "Растау", "Confirm"),
    "otp.again": ("Выбрать другой сертификат", "Басқа сертификат таңдау", "Pick another certificate"),
    "otp.wrong": (
        "Неверный код. Осталось попыток: {left}.",
        "Код қате. Қалған әрекет саны: {left}.",
        "Wrong code. Tries left: {left}.",
    ),
    "otp.used_up": (
        "Код введён неверно 3 раза. Запросите новый код.",
        "Код 3 рет қате енгізілді. Жаңа код сұраңыз.",
        "The code was wrong 3 times. Ask for a new code.",
    ),
    "otp.expired": (
        "Срок действия кода истёк. Запросите новый код.",
        "Кодтың мерзімі өтті. Жаңа код сұраңыз.",
        "The code has expired. Ask for a new code.",
    ),
    "otp.too_many": (
        "Можно запросить не больше 3 кодов в час. Попробуйте после {at}.",
        "Сағатына 3 кодтан артық сұрауға болмайды. {at} кейін қайталаңыз.",
        "At most 3 codes an hour. Try again after {at}.",
    ),
    "done.title": ("Обмен выполнен", "Айырбастау орындалды", "Exchange done"),
    "done.text": (
        "Вы получили «{name}». Код мы также отправили по SMS.",
        "Сіз «{name}» алдыңыз. Кодты SMS арқылы да жібердік.",
        "You have got \u201c{name}\u201d. We have also texted you the code.",
    ),
    "done.balance": (
        "Остаток на карте: {amount}",
        "Картадағы қалдық: {amount}",
        "Left on the card: {amount}",
    ),
    "done.back": ("Вернуться к карте", "Картаға оралу", "Back to the card"),
    "problem.insufficient_balance": (
        "На карте недостаточно средств для этого сертификата.",
        "Бұл сертификатқа картада қаражат жеткіліксіз.",
        "The card's balance is not enough for this certificate.",
    ),
    "problem.card_expired": ("Срок действия карты истёк.", "Картаның мерзімі өтті.", "The card has expired."),
    "problem.card_blocked": (
        "Карта заблокирована. Обратитесь в поддержку.",
        "Карта бұғатталған. Қолдау қызметіне хабарласыңыз.",
        "The card is blocked. Please call support.",
    ),
    "problem.card_exhausted": ("Баланс карты исчерпан.", "Карта балансы таусылды.", "The card is used up."),
    "problem.card_cancelled": ("Карта отменена.", "Карта жойылды.", "The card was cancelled."),
    "problem.out_of_stock": (
        "Эти сертификаты закончились. Выберите другой.",
        "Бұл сертификаттар таусылды. Басқасын таңдаңыз.",
        "These certificates have run out. Pick another one.",
    ),
    "problem.not_exchangeable": (
        "Эту карту нельзя обменять на этот сертификат.",
        "Бұл картаны осы сертификатқа айырбастауға болмайды.",
        "This card cannot be exchanged for this certificate.",
    ),
    "problem.card_not_found": ("Карта не найдена.", "Карта табылмады.", "No such card."),
    "problem.form": (
        "Страница устарела. Обновите её и попробуйте ещё раз.",
        "Бет ескірді. Оны жаңартып, қайталап көріңіз.",
        "The page has expired. Reload it and try again.",
    ),
    "problem.other": (
        "Не получилось. Попробуйте ещё раз позже.",
        "Орындалмады. Кейінірек қайталап көріңіз.",
        "That did not work. Please try again later.",
    ),
    "entry.title": ("Карта по номеру", "Карта нөмірі бойынша", "Card by number"),
    "entry.hint": (
        "Получили карту в подарок? Введите её номер и ПИН, чтобы увидеть баланс и обменять её.",
        "Картаны сыйлыққа алдыңыз ба? Балансты көру және айырбастау үшін оның нөмірі мен ПИН-ін енгізіңіз.",
        "Got a card as a present? Enter its number and PIN to see its balance and exchange it.",
    ),
    "entry.number": ("Номер карты", "Карта нөмірі", "Card number"),
    "entry.pin": ("ПИН", "ПИН", "PIN"),
    "entry.submit": ("Открыть карту", "Картаны ашу", "Open the card"),
    "entry.wrong": (
        "Номер или ПИН не подходят. Осталось попыток: {left}.",
        "Нөмір немесе ПИН сәйкес келмейді. Қалған әрекет саны: {left}.",
        "The number or PIN does not match. Tries left: {left}.",
    ),
    "entry.not_found": (
        "Номер или ПИН не подходят.",
        "Нөмір немесе ПИН сәйкес келмейді.",
        "The number or PIN does not match.",
    ),
    "entry.locked": (
        "Слишком много неверных ПИН: карта временно заблокирована. Попробуйте после {at}.",
        "Қате ПИН тым көп: карта уақытша бұғатталды. {at} кейін қайталаңыз.",
        "Too many wrong PINs: the card is locked for a while. Try again after {at}.",
    ),
    "gone.title": ("Страница не найдена", "Бет табылмады", "Page not found"),
    "gone.text": (
        "Ссылка неверна или больше не действует. Проверьте SMS или обратитесь в поддержку.",
        "Сілтеме қате немесе енді жарамсыз. SMS-ті тексеріңіз немесе қолдау қызметіне хабарласыңыз.",
        "The link is wrong or no longer works. Check the SMS or contact support.",
    ),
    "expired.title": ("Срок действия истёк", "Мерзімі өтті", "This reward has expired"),
    "expired.text": (
        "Срок действия подарка истёк {date}.",
        "Сыйлықтың мерзімі {date} өтті.",
        "This reward expired on {date}.",
    ),
    "limited.title": ("Слишком много запросов", "Сұраныстар тым көп", "Too many requests"),
    "limited.text": (
        "Подождите {seconds} с и попробуйте снова.",
        "{seconds} с күтіп, қайталап көріңіз.",
        "Wait {seconds} s and try again.",
    ),
}

# The SMS texts. The one-time code's last line binds it to our origin (WICG sms-one-time-codes):
# nothing before the `@`, one space, `#` and the code, so phones offer to fill it in on our site alone.
SMS: dict[str, tuple[str, str, str]] = {
    "otp": (
        "{code} — код обмена {amount} с карты {brand}. Никому не сообщайте его.",
        "{code} — {brand} картасынан {amount} айырбастау коды. Оны ешкімге айтпаңыз.",
        "{code} is your code to exchange {amount} of your {brand} card. Do not share it.",
    ),
    "certificate": (
        "{name}: код {code}{pin}. Действует до {expires}.",
        "{name}: код {code}{pin}. {expires} дейін жарамды.",
        "{name}: code {code}{pin}. Valid until {expires}.",
    ),
    "certificate.pin": (", ПИН {pin}", ", ПИН {pin}", ", PIN {pin}"),
    "reminder": (
        "{program}: на карте {brand} осталось {nominal}, она действует до {expires}. Обменять: {link}",
        "{program}: {brand} картасында {nominal} қалды, ол {expires} дейін жарамды. Айырбастау: {link}",
        "{program}: your {brand} card has {nominal} left and expires on {expires}. Exchange it: {link}",
    ),
}


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _pick(entry: tuple[str, str, str], locale: str) -> str:
    return entry[LOCALES.index(locale) if locale in LOCALES else 0]


def translate(locale: str, key: str, **values: object) -> str:
    entry = MESSAGES.get(key)
    if entry is None:
        return key
    text = _pick(entry, locale)
    return text.format_map(_Missing(values)) if values else text


def sms_text(locale: str, key: str, **values: object) -> str:
    return _pick(SMS[key], locale).format_map(_Missing(values))


def localized(value: dict | None, locale: str) -> str | None:
    """A catalog text in the locale, else in ru, en, kk (the first the catalog has)."""
    if not value:
        return None
    for candidate in (locale, "ru", "en", "kk"):
        if value.get(candidate):
            return str(value[candidate])
    return None


def from_accept_language(header: str | None) -> str | None:
    """The first of our locales the browser asks for (by q-value, then order)."""
    if not header:
        return None
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LOCALES and q > 0:
            choices.append((-q, index, language))
    return min(choices)[2] if choices else None


def format_money(minor: int, currency: str) -> str:
    """`5 000 ₸` (whole) or `5 000,50 ₸`, groups and sign with no-break spaces."""
    exp = exponent(currency)
    whole, frac = divmod(abs(minor), 10**exp)
    grouped = f"{whole:,}".replace(",", NBSP)
    sign = "-" if minor < 0 else ""
    number = f"{sign}{grouped}" if not frac else f"{sign}{grouped},{frac:0{exp}d}"
    return f"{number}{NBSP}{CURRENCY_SIGNS.get(currency, currency)}"


_GROUPS = re.compile(r"(?<=\d) (?=\d{3}\b)| (?=[₸$€])")


def nobreak(text: str) -> str:
    """`2 000 ₸` kept on one line: no-break spaces between digit groups and before a currency sign."""
    return _GROUPS.sub(NBSP, text)


def format_date(value: datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%d.%m.%Y") if value is not None else ""


def format_time(value: datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%d.%m.%Y %H:%M") if value is not None else ""


def mask_phone(msisdn: str) -> str:
    """+7 *** *** 45 67: enough for the holder to recognise it, not to learn it."""
    return f"{msisdn[:2]} *** *** {msisdn[-4:-2]} {msisdn[-2:]}" if len(msisdn) >= 8 else "***"
