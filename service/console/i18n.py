"""The console's words in Russian (the default), Kazakh and English, and how it writes money and
time: `5 000,00 ₸` in every language, dates in the program's time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from service.kit.observability.logging import mask_tail
from service.kit.values.money import exponent
from service.kit.values.zones import zone

LOCALES = ("ru", "kk", "en")
DEFAULT_LOCALE = "ru"
DEFAULT_ZONE = zone("Asia/Almaty")  # the first customer's; pages without a program use it
NBSP = "\u00a0"
CURRENCY_SIGNS = {"KZT": "₸"}

# key: (ru, kk, en). A test checks that every key used by a template is here, in all three.
MESSAGES: dict[str, tuple[str, str, str]] = {
    "app.title": ("Консоль вознаграждений", "Сыйақылар консолі", "Rewards console"),
    "lang.name": ("Русский", "Қазақша", "English"),
    "nav.subscriber": ("Абонент", "Абонент", "Subscriber"),
    "nav.stock": ("Склад кодов", "Кодтар қоймасы", "Stock"),
    "nav.cards": ("Касса карт", "Карта кассасы", "Card desk"),
    "nav.periods": ("Закрытие месяца", "Айды жабу", "Month close"),
    "nav.dashboard": ("Мониторинг", "Мониторинг", "Dashboard"),
    "nav.audit": ("Журнал действий", "Әрекеттер журналы", "Audit log"),
    "nav.campaigns": ("Кампании", "Науқандар", "Campaigns"),
    "nav.sign_out": ("Выйти", "Шығу", "Sign out"),
    "nav.menu": ("Меню", "Мәзір", "Menu"),
    "role.support": ("поддержка", "қолдау", "support"),
    "role.finance": ("финансы", "қаржы", "finance"),
    "role.partner": ("партнёр", "серіктес", "partner"),
    "role.admin": ("администратор", "әкімші", "admin"),
    "role.approver": ("согласующий", "келісуші", "approver"),
    # sign-in
    "login.title": ("Вход для сотрудников", "Қызметкерлерге кіру", "Staff sign-in"),
    "login.email": ("Эл. почта", "Эл. пошта", "E-mail"),
    "login.password": ("Пароль", "Құпиясөз", "Password"),
    "login.submit": ("Войти", "Кіру", "Sign in"),
    "login.wrong": (
        "Неверная почта или пароль.",
        "Пошта немесе құпиясөз қате.",
        "Wrong e-mail or password.",
    ),
    "login.throttled": (
        "Слишком много неверных попыток входа. Попробуйте снова после {until}.",
        "Кірудің қате әрекеттері тым көп. {until} кейін қайталап көріңіз.",
        "Too many wrong sign-in attempts. Try again after {until}.",
    ),
    "login.expired": (
        "Сессия истекла, войдите снова.",
        "Сессия аяқталды, қайта кіріңіз.",
        "Your session has ended; sign in again.",
    ),
    "login.signed_out": ("Вы вышли.", "Сіз шықтыңыз.", "You have signed out."),
    "login.csrf": (
        "Форма устарела, попробуйте ещё раз.",
        "Пішін ескірді, қайталап көріңіз.",
        "The form has expired; try again.",
    ),
    # common
    "common.search": ("Найти", "Іздеу", "Search"),
    "common.status": ("Статус", "Күйі", "Status"),
    "common.created": ("Создано", "Құрылды", "Created"),
    "common.program": ("Программа", "Бағдарлама", "Program"),
    "common.partner": ("Партнёр", "Серіктес", "Partner"),
    "common.product": ("Товар", "Тауар", "Product"),
    "common.amount": ("Сумма", "Сома", "Amount"),
    "common.reason": ("Причина", "Себебі", "Reason"),
    "common.when": ("Когда", "Қашан", "When"),
    "common.who": ("Кто", "Кім", "Who"),
    "common.none": ("нет", "жоқ", "none"),
    "common.back": ("Назад", "Артқа", "Back"),
    "common.cancel": ("Отмена", "Болдырмау", "Cancel"),
    "common.line": ("Строка", "Жол", "Line"),
    "common.count": ("Количество", "Саны", "Count"),
    "common.month": ("Месяц", "Ай", "Month"),
    "common.show": ("Показать", "Көрсету", "Show"),
    "common.download": ("Скачать", "Жүктеу", "Download"),
    "common.refused": ("Отказано", "Бас тартылды", "Refused"),
    "common.done": ("Готово", "Дайын", "Done"),
    "common.time_zone": ("Часовой пояс", "Уақыт белдеуі", "Time zone"),
    "error.not_found": ("Не найдено", "Табылмады", "Not found"),
    "error.not_found_text": (
        "Такой страницы или записи нет, либо она вам недоступна.",
        "Мұндай бет немесе жазба жоқ, не ол сізге қолжетімсіз.",
        "There is no such page or record, or it is outside your scope.",
    ),
    "error.forbidden": ("Нет доступа", "Қолжетімсіз", "Not allowed"),
    "error.forbidden_text": (
        "Ваша роль не позволяет открыть эту страницу.",
        "Сіздің рөліңіз бұл бетті ашуға мүмкіндік бермейді.",
        "Your role may not use this page.",
    ),
    # redemption statuses
    "status.accepted": ("принято", "қабылданды", "accepted"),
    "status.sent": ("отправлено", "жіберілді", "sent"),
    "status.delivered": ("доставлено", "жеткізілді", "delivered"),
    "status.failed": ("не доставлено", "жеткізілмеді", "failed"),
    "status.cancelled": ("отменено", "болдырылмады", "cancelled"),
    "status.pending": ("в очереди", "кезекте", "pending"),
    "status.submitting": ("передаётся", "берілуде", "submitting"),
    "status.active": ("активна", "белсенді", "active"),
    "status.blocked": ("заблокирована", "бұғатталған", "blocked"),
    "status.exhausted": ("израсходована", "жұмсалған", "exhausted"),
    "status.expired": ("истекла", "мерзімі өтті", "expired"),
    "status.open": ("открыт", "ашық", "open"),
    "status.closing": ("закрывается", "жабылуда", "closing"),
    "status.closed": ("закрыт", "жабық", "closed"),
    # subscriber page
    "sub.title": ("Поиск абонента", "Абонентті іздеу", "Find a subscriber"),
    "sub.phone": ("Номер телефона", "Телефон нөмірі", "Phone number"),
    "sub.phone_hint": (
        "В любом виде: 87011234567, 7011234567, +7 701 123 45 67",
        "Кез келген түрде: 87011234567, 7011234567, +7 701 123 45 67",
        "In any form: 87011234567, 7011234567, +7 701 123 45 67",
    ),
    "sub.bad_phone": (
        "Это не номер мобильного телефона.",
        "Бұл ұялы телефон нөмірі емес.",
        "Not a mobile number.",
    ),
    "sub.results": (
        "Вознаграждения абонента {phone}",
        "{phone} абонентінің сыйақылары",
        "Rewards of {phone}",
    ),
    "sub.nothing": (
        "У абонента нет вознаграждений.",
        "Абонентте сыйақы жоқ.",
        "This subscriber has no rewards.",
    ),
    "sub.offer": ("Предложение", "Ұсыныс", "Offer"),
    "sub.reward": ("Награда", "Сыйақы", "Reward"),
    "sub.open": ("Открыть", "Ашу", "Open"),
    "red.title": ("Вознаграждение", "Сыйақы", "Redemption"),
    "red.phone": ("Телефон", "Телефон", "Phone"),
    "red.external_id": ("ID в системе лояльности", "Адалдық жүйесіндегі ID", "Loyalty system id"),
    "red.points": ("Баллы", "Ұпайлар", "Points"),
    "red.code": ("Код (последние 4)", "Код (соңғы 4)", "Code (last 4)"),
    "red.card_number": ("Карта (последние 4)", "Карта (соңғы 4)", "Card (last 4)"),
    "red.nominal": ("Номинал", "Номинал", "Nominal"),
    "red.expires": ("Действует до", "Жарамдылық мерзімі", "Valid until"),
    "red.resends": ("Повторных отправок", "Қайта жіберулер", "Resends"),
    "red.sandbox": ("Песочница: тестовая выдача", "Құмсалғыш: тесттік беру", "Sandbox: a test redemption"),
    "red.timeline": ("Хронология", "Хронология", "Timeline"),
    "red.ev_created": ("Создано вознаграждение", "Сыйақы құрылды", "Redemption created"),
    "red.ev_sms": ("SMS №{n}", "SMS №{n}", "SMS #{n}"),
    "red.ev_first": ("первая отправка", "алғашқы жіберу", "first send"),
    "red.ev_resend": ("повторная отправка", "қайта жіберу", "resend"),
    "red.ev_queued": ("SMS №{n} в очереди на отправку", "SMS №{n} жіберу кезегінде", "SMS #{n} queued"),
    "red.provider": ("Оператор", "Оператор", "Provider"),
    "red.provider_status": ("Статус у оператора", "Оператордағы күйі", "Provider status"),
    "red.segments": ("Частей", "Бөліктер", "Parts"),
    "red.attempts": ("Попыток", "Әрекеттер", "Attempts"),
    "red.sent_at": ("Передано оператору", "Операторға берілді", "Taken by provider"),
    "red.receipt_at": ("Отчёт о доставке", "Жеткізу есебі", "Delivery receipt"),
    "red.error": ("Ошибка", "Қате", "Error"),
    "red.webhook": ("Вебхук «{type}»", "«{type}» вебхугы", 'Webhook "{type}"'),
    "red.webhook_delivered": ("доставлен {at}", "{at} жеткізілді", "delivered {at}"),
    "red.webhook_waiting": ("ожидает доставки", "жеткізуді күтуде", "waiting for delivery"),
    "red.webhook_given_up": ("доставка прекращена {at}", "жеткізу {at} тоқтатылды", "given up {at}"),
    "red.webhook_try": ("попытка {n}", "{n}-әрекет", "attempt {n}"),
    "red.webhook_next": ("следующая {at}", "келесісі {at}", "next try {at}"),
    "red.resend": ("Отправить SMS ещё раз", "SMS-ті қайта жіберу", "Resend the SMS"),
    "red.cancel": ("Отменить вознаграждение", "Сыйақыны болдырмау", "Cancel the redemption"),
    "red.cancel_confirm": (
        "Отменить это вознаграждение? Действие необратимо.",
        "Бұл сыйақыны болдырмау керек пе? Әрекетті қайтару мүмкін емес.",
        "Cancel this redemption? This cannot be undone.",
    ),
    "red.resent": (
        "SMS поставлено в очередь повторно.",
        "SMS қайта кезекке қойылды.",
        "The SMS is queued again.",
    ),
    "red.cancelled": ("Вознаграждение отменено.", "Сыйақы болдырылмады.", "The redemption is cancelled."),
    "card.title": ("Подарочная карта", "Сыйлық картасы", "Gift card"),
    "card.balance": ("Баланс", "Қалдық", "Balance"),
    "card.exchanges": ("Обмены", "Айырбастар", "Exchanges"),
    "channel.partner": ("у партнёра", "серіктесте", "at the partner"),
    "channel.online": ("онлайн", "онлайн", "online"),
    # what the holder did on the reward page (service/holders), in the redemption's timeline
    "page.code_shown": (
        "Код показан на странице подарка",
        "Код сыйлық бетінде көрсетілді",
        "Code shown on the reward page",
    ),
    "page.certificate_shown": (
        "Сертификат показан на странице подарка",
        "Сертификат сыйлық бетінде көрсетілді",
        "Certificate shown on the reward page",
    ),
    "page.otp_sent": (
        "Код подтверждения отправлен ({sku})",
        "Растау коды жіберілді ({sku})",
        "One-time code sent ({sku})",
    ),
    "page.otp_wrong": (
        "Неверный код подтверждения ({sku})",
        "Растау коды қате ({sku})",
        "Wrong one-time code ({sku})",
    ),
    "page.exchanged": (
        "Обмен онлайн на странице подарка ({sku})",
        "Сыйлық бетінде онлайн айырбастау ({sku})",
        "Exchanged online on the reward page ({sku})",
    ),
    "card.events": ("События карты", "Карта оқиғалары", "Card events"),
    "card.block": ("Заблокировать карту", "Картаны бұғаттау", "Block the card"),
    "card.unblock": ("Разблокировать карту", "Картаны бұғаттан шығару", "Unblock the card"),
    "card.blocked_ok": ("Карта заблокирована.", "Карта бұғатталды.", "The card is blocked."),
    "card.unblocked_ok": ("Карта разблокирована.", "Карта бұғаттан шығарылды.", "The card is unblocked."),
    "card.reason_needed": ("Укажите причину.", "Себебін көрсетіңіз.", "Give a reason."),
    "card.locked_until": (
        "Ввод номера и PIN заблокирован до {until}: неверные PIN с нескольких касс или адресов.",
        "Нөмір мен PIN енгізу {until} дейін бұғатталған: бірнеше кассадан немесе мекенжайдан қате PIN.",
        "Number and PIN entry is locked until {until}: wrong PINs from several tills or addresses.",
    ),
    "card.unlock": ("Снять блокировку PIN", "PIN бұғатын алу", "Lift the PIN lock"),
    "card.unlocked_ok": ("Блокировка PIN снята.", "PIN бұғаты алынды.", "The PIN lock is lifted."),
    "event.blocked": ("заблокирована", "бұғатталды", "blocked"),
    "event.unblocked": ("разблокирована", "бұғаттан шығарылды", "unblocked"),
    "event.locked": ("заблокирована (PIN)", "бұғатталды (PIN)", "locked (PIN)"),
    "event.unlocked": ("блокировка PIN снята", "PIN бұғаты алынды", "PIN lock lifted"),
    "event.expired": ("истекла", "мерзімі өтті", "expired"),
    # stock
    "stock.title": ("Склад кодов", "Кодтар қоймасы", "Code stock"),
    "stock.sku": ("Артикул", "Артикул", "SKU"),
    "stock.available": ("Доступно", "Қолжетімді", "Available"),
    "stock.reserved": ("В резерве", "Резервте", "Reserved"),
    "stock.issued": ("Выдано", "Берілді", "Issued"),
    "stock.expiring": ("Истекают скоро", "Мерзімі жақында бітеді", "Expiring soon"),
    "stock.runway": ("Хватит на", "Жетеді", "Runway"),
    "stock.runway_days": ("{days} дн.", "{days} күн", "{days} days"),
    "stock.no_pace": ("нет выдач за 7 дней", "7 күнде берілмеді", "no issues in 7 days"),
    "stock.low": ("мало", "аз", "low"),
    "stock.expiring_flag": ("истекают", "мерзімі бітуде", "expiring"),
    "stock.upload": ("Загрузить коды (CSV)", "Кодтарды жүктеу (CSV)", "Upload codes (CSV)"),
    "stock.upload_hint": (
        "Строки: code[,pin][,expires_at]. Повторная загрузка того же файла ничего не добавит.",
        "Жолдар: code[,pin][,expires_at]. Сол файлды қайта жүктеу ештеңе қоспайды.",
        "Lines: code[,pin][,expires_at]. Uploading the same file again adds nothing.",
    ),
    "stock.file": ("Файл", "Файл", "File"),
    "stock.send": ("Загрузить", "Жүктеу", "Upload"),
    "stock.progress": ("Передача файла", "Файлды жіберу", "Sending the file"),
    "stock.lines": ("Строк", "Жолдар", "Lines"),
    "stock.accepted": ("Принято", "Қабылданды", "Accepted"),
    "stock.duplicates": ("Дубликаты", "Қайталанатындар", "Duplicates"),
    "stock.rejected": ("Отклонено", "Қабылданбады", "Rejected"),
    "stock.rejected_lines": ("Отклонённые строки", "Қабылданбаған жолдар", "Rejected lines"),
    "stock.duplicate_lines": ("Строки-дубликаты", "Қайталанатын жолдар", "Duplicate lines"),
    "stock.no_file": ("Выберите файл.", "Файлды таңдаңыз.", "Choose a file."),
    # card desk
    "desk.title": (
        "Касса: обмен подарочной карты",
        "Касса: сыйлық картасын айырбастау",
        "Card desk: exchange a gift card",
    ),
    "desk.number": ("Номер карты", "Карта нөмірі", "Card number"),
    "desk.pin": ("PIN", "PIN", "PIN"),
    "desk.verify": ("Проверить карту", "Картаны тексеру", "Verify the card"),
    "desk.balance_before": ("Баланс до обмена", "Айырбасқа дейінгі қалдық", "Balance before"),
    "desk.balance_after": ("Баланс после обмена", "Айырбастан кейінгі қалдық", "Balance after"),
    "desk.products": (
        "Сертификаты партнёра для обмена",
        "Айырбасқа арналған серіктес сертификаттары",
        "Your certificates for this card",
    ),
    "desk.face": ("Номинал", "Номинал", "Face value"),
    "desk.exchange": ("Обменять", "Айырбастау", "Exchange"),
    "desk.unaffordable": ("не хватает баланса", "қалдық жетпейді", "balance too low"),
    "desk.certificate": (
        "Сертификат для покупателя",
        "Сатып алушыға сертификат",
        "Certificate for the customer",
    ),
    "desk.certificate_hint": (
        "Передайте код покупателю. Он показан только сейчас.",
        "Кодты сатып алушыға беріңіз. Ол тек қазір көрсетіледі.",
        "Hand this code to the customer. It is shown only now.",
    ),
    "desk.code": ("Код", "Код", "Code"),
    "desk.no_products": (
        "Нет ваших сертификатов для этой карты.",
        "Бұл картаға сіздің сертификаттарыңыз жоқ.",
        "None of your certificates fits this card.",
    ),
    "desk.remaining": ("Осталось попыток: {n}", "Қалған әрекет: {n}", "Attempts left: {n}"),
    "desk.already": (
        "Этот обмен уже выполнен.",
        "Бұл айырбас орындалып қойған.",
        "This exchange has already been made.",
    ),
    # periods
    "per.title": ("Закрытие месяца", "Айды жабу", "Month close"),
    "per.totals": ("Итоги периода", "Кезең қорытындысы", "Period totals"),
    "per.records": ("Записей", "Жазбалар", "Records"),
    "per.quantity": ("Кол-во", "Саны", "Qty"),
    "per.face": ("Номинал", "Номинал", "Face value"),
    "per.cost": ("Себестоимость", "Өзіндік құны", "Cost"),
    "per.vat": ("НДС", "ҚҚС", "VAT"),
    "per.type": ("Тип", "Түрі", "Type"),
    "per.ends_at": ("Период заканчивается", "Кезең аяқталады", "The period ends"),
    "per.not_ended": (
        "Месяц ещё не закончился: закрыть можно после {at}.",
        "Ай әлі аяқталған жоқ: {at} кейін жабуға болады.",
        "The month has not ended: it can be closed after {at}.",
    ),
    "per.close": ("Закрыть месяц", "Айды жабу", "Close the month"),
    "per.confirm_title": ("Подтвердите закрытие", "Жабуды растаңыз", "Confirm the close"),
    "per.confirm_text": (
        "Закрыть {month} для программы {program}? Итоги будут заморожены, будут выпущены акт и реестр. Отменить нельзя.",  # noqa: E501
        "{program} бағдарламасы үшін {month} жабылсын ба? Қорытынды бекітіледі, акт пен тізілім шығарылады. Қайтару мүмкін емес.",  # noqa: E501
        "Close {month} for {program}? Its totals are frozen and the act and registry are issued. This cannot be undone.",  # noqa: E501
    ),
    "per.confirm": ("Да, закрыть месяц", "Иә, айды жабу", "Yes, close the month"),
    "per.closed_ok": (
        "Месяц закрыт, документы выпущены.",
        "Ай жабылды, құжаттар шығарылды.",
        "The month is closed; the documents are issued.",
    ),
    "per.documents": ("Закрывающие документы", "Жабу құжаттары", "Closing documents"),
    "per.doc.act.pdf": ("Акт (PDF)", "Акт (PDF)", "Act (PDF)"),
    "per.doc.registry.xlsx": ("Реестр (XLSX)", "Тізілім (XLSX)", "Registry (XLSX)"),
    "per.doc.registry.csv": ("Реестр (CSV)", "Тізілім (CSV)", "Registry (CSV)"),
    "per.no_documents": (
        "Документы появятся после закрытия.",
        "Құжаттар жабылғаннан кейін пайда болады.",
        "The documents appear once the month is closed.",
    ),
    "per.closed_by": ("Закрыл", "Жапқан", "Closed by"),
    "per.settlements": ("Расчёты с партнёрами", "Серіктестермен есеп айырысу", "Partner settlements"),
    "per.issued": ("Выдано кодов", "Берілген кодтар", "Codes issued"),
    "per.exchanged": ("Обменено", "Айырбасталды", "Exchanged"),
    "per.to_pay": ("К оплате", "Төлеуге", "To pay"),
    "per.reconcile": (
        "Сверка с отчётом партнёра",
        "Серіктес есебімен салыстыру",
        "Reconcile a partner's report",
    ),
    "per.reconcile_hint": (
        "CSV: code[,activated_at][,amount] — активированные у партнёра коды за месяц.",
        "CSV: code[,activated_at][,amount] — серіктесте ай ішінде белсендірілген кодтар.",
        "CSV: code[,activated_at][,amount]: the codes the partner activated in the month.",
    ),
    "per.reconcile_send": ("Сверить", "Салыстыру", "Reconcile"),
    "per.matched": ("Совпало", "Сәйкес келді", "Matched"),
    "per.missing": (
        "Выдано, но не активировано (нет в отчёте)",
        "Берілген, бірақ белсендірілмеген (есепте жоқ)",
        "Issued, not activated (missing from the report)",
    ),
    "per.extra": (
        "Активировано, но не выдавалось нами (лишние)",
        "Белсендірілген, бірақ біз бермегенбіз (артық)",
        "Activated, never issued by us (extra)",
    ),
    "per.mismatch": ("Сумма отличается", "Сома өзгеше", "Amount differs"),
    "per.reported": ("В отчёте", "Есепте", "Reported"),
    "per.expected": ("У нас", "Бізде", "Ours"),
    "per.age": ("Дней", "Күн", "Days"),
    "per.last4": ("Код (посл. 4)", "Код (соңғы 4)", "Code (last 4)"),
    "per.type.issue": ("выдача", "беру", "issue"),
    "per.type.cancel": ("отмена", "болдырмау", "cancel"),
    "per.type.exchange": ("обмен", "айырбас", "exchange"),
    "per.type.breakage": ("сгорание", "күйіп кету", "breakage"),
    # dashboard
    "dash.title": ("Мониторинг", "Мониторинг", "Live dashboard"),
    "dash.updated": ("Обновлено", "Жаңартылды", "Updated"),
    "dash.today": ("Вознаграждений сегодня", "Бүгінгі сыйақылар", "Redemptions today"),
    "dash.per_minute": (
        "Вознаграждения в минуту (60 мин)",
        "Минутына сыйақылар (60 мин)",
        "Redemptions per minute (60 min)",
    ),
    "dash.sms": ("SMS за последний час", "Соңғы сағаттағы SMS", "SMS in the last hour"),
    "dash.sms_delivered": ("доставлено", "жеткізілді", "delivered"),
    "dash.sms_failed": ("не доставлено", "жеткізілмеді", "failed"),
    "dash.sms_pending": ("в пути", "жолда", "pending"),
    "dash.latency": (
        "Доставка за час: p50 / p95",
        "Сағаттағы жеткізу: p50 / p95",
        "Delivery in the last hour: p50 / p95",
    ),
    "dash.seconds": ("{s} с", "{s} с", "{s} s"),
    "dash.budget": ("Бюджет месяца", "Айлық бюджет", "Budget this month"),
    "dash.spent": ("Потрачено", "Жұмсалды", "Spent"),
    "dash.of": ("из", "ішінен", "of"),
    "dash.time": ("Время", "Уақыт", "Time"),
    "dash.no_budget": ("без лимита", "шектеусіз", "no budget"),
    "dash.runway": ("Запас кодов", "Код қоры", "Stock runway"),
    "dash.outbox": ("Очередь исходящих", "Шығыс кезегі", "Outbox backlog"),
    "dash.outbox_oldest": ("Старейшее, с", "Ең ескісі, с", "Oldest, s"),
    "dash.seconds_unit": ("с", "с", "s"),
    "dash.no_data": ("Нет данных", "Деректер жоқ", "No data"),
    # audit
    "audit.title": ("Журнал действий сотрудников", "Қызметкерлер әрекеттерінің журналы", "Staff audit log"),
    "audit.action": ("Действие", "Әрекет", "Action"),
    "audit.target": ("Объект", "Нысан", "Target"),
    "audit.outcome": ("Результат", "Нәтиже", "Outcome"),
    "audit.address": ("Адрес", "Мекенжай", "Address"),
    "audit.more": ("Ещё", "Тағы", "More"),
    "action.sign_in": ("вход", "кіру", "sign-in"),
    "action.sign_out": ("выход", "шығу", "sign-out"),
    "action.resend": ("повтор SMS", "SMS қайталау", "resend"),
    "action.cancel": ("отмена", "болдырмау", "cancel"),
    "action.block": ("блокировка карты", "картаны бұғаттау", "block card"),
    "action.unblock": ("разблокировка карты", "картаны бұғаттан шығару", "unblock card"),
    "action.unlock": ("снятие блокировки PIN", "PIN бұғатын алу", "lift PIN lock"),
    "action.close_period": ("закрытие месяца", "айды жабу", "close period"),
    "action.upload_codes": ("загрузка кодов", "кодтарды жүктеу", "upload codes"),
    "action.verify_card": ("проверка карты", "картаны тексеру", "verify card"),
    "action.exchange_card": ("обмен карты", "картаны айырбастау", "exchange card"),
    "action.reconcile_partner": ("сверка с партнёром", "серіктеспен салыстыру", "partner reconciliation"),
    # campaigns
    "camp.title": ("Кампании", "Науқандар", "Campaigns"),
    "camp.none": ("Кампаний пока нет.", "Әзірге науқан жоқ.", "No campaigns yet."),
    "camp.name": ("Название", "Атауы", "Name"),
    "camp.lines": ("Строк", "Жолдар", "Lines"),
    "camp.pending": ("Ожидают", "Күтуде", "Pending"),
    "camp.done": ("Выдано", "Берілді", "Done"),
    "camp.failed": ("Ошибки", "Қателер", "Failed"),
    "camp.cancelled": ("Отменено", "Болдырылмады", "Cancelled"),
    "camp.silent": (
        "Без SMS (отказ от рассылок)",
        "SMS-сіз (таратудан бас тартқан)",
        "Without SMS (opted out)",
    ),
    "camp.value": ("Сумма", "Сома", "Value"),
    "camp.new": ("Новая кампания", "Жаңа науқан", "New campaign"),
    "camp.new_hint": (
        "Черновик: затем загрузите файл со списком абонентов, проверьте отчёт и отправьте на согласование.",
        "Жоба: содан кейін абоненттер тізімі бар файлды жүктеп, есепті тексеріп, келісуге жіберіңіз.",
        "A draft: then upload the file of subscribers, read its report and submit it for approval.",
    ),
    "camp.tariff": ("Тариф", "Тариф", "Tariff"),
    "camp.offer": ("Предложение по умолчанию", "Әдепкі ұсыныс", "Default offer"),
    "camp.locale": ("Язык SMS", "SMS тілі", "SMS language"),
    "camp.locale.ru": ("русский", "орысша", "Russian"),
    "camp.locale.kk": ("казахский", "қазақша", "Kazakh"),
    "camp.locale.en": ("английский", "ағылшынша", "English"),
    "camp.cap": ("Лимит бюджета", "Бюджет шегі", "Budget cap"),
    "camp.no_cap": ("без лимита", "шектеусіз", "no cap"),
    "camp.rate": ("Скорость", "Жылдамдық", "Rate"),
    "camp.per_second": ("{n} строк/с", "{n} жол/с", "{n} lines/s"),
    "camp.no_rate": ("без ограничения", "шектеусіз", "uncapped"),
    "camp.create": ("Создать черновик", "Жоба құру", "Create the draft"),
    "camp.name_needed": ("Укажите название.", "Атауын көрсетіңіз.", "Give a name."),
    "camp.bad_rate": (
        "Скорость: целое число от 1 до 10 000 строк в секунду.",
        "Жылдамдық: секундына 1-ден 10 000-ға дейінгі бүтін сан.",
        "Rate: a whole number of lines per second, 1 to 10 000.",
    ),
    "camp.bad_cap": (
        "Лимит: сумма, например 500000.00.",
        "Шек: сома, мысалы 500000.00.",
        "Cap: an amount, e.g. 500000.00.",
    ),
    "camp.created_by": ("Создал", "Құрған", "Created by"),
    "camp.submitted_by": ("Отправил на согласование", "Келісуге жіберген", "Submitted by"),
    "camp.approved_by": ("Согласовал", "Келіскен", "Approved by"),
    "camp.rejected_by": ("Отклонил", "Қабылдамаған", "Rejected by"),
    "camp.snapshot": ("Отправлено на согласование", "Келісуге жіберілген", "Submitted for approval"),
    "camp.snapshot_hint": (
        "Согласуется именно это: файл с этим хешем, это число строк и эта сумма. Любое изменение вернёт кампанию в черновик.",  # noqa: E501
        "Дәл осы келісіледі: осы хэші бар файл, осы жолдар саны және осы сома. Кез келген өзгеріс науқанды жобаға қайтарады.",  # noqa: E501
        "This is what is approved: the file with this hash, this line count and this value. Any change sends the campaign back to draft.",  # noqa: E501
    ),
    "camp.file_hash": ("SHA-256 файла", "Файлдың SHA-256", "File SHA-256"),
    "camp.needs_approval": ("Нужно согласование", "Келісу қажет", "Needs approval"),
    "camp.yes": (
        "да, выше порога программы",
        "иә, бағдарлама шегінен жоғары",
        "yes, above the program's threshold",
    ),
    "camp.no_below_threshold": (
        "нет, сумма не выше порога программы",
        "жоқ, сома бағдарлама шегінен аспайды",
        "no, the value is within the program's threshold",
    ),
    "camp.file": ("Файл и проверка", "Файл және тексеру", "File and validation"),
    "camp.no_file": ("Файл ещё не загружен.", "Файл әлі жүктелмеген.", "No file uploaded yet."),
    "camp.format": ("Формат", "Пішімі", "Format"),
    "camp.separator": ("разделитель", "бөлгіш", "separator"),
    "camp.report": ("Отчёт проверки", "Тексеру есебі", "Validation report"),
    "camp.problems": (
        "Проблем: {n}. Исправьте файл и загрузите снова.",
        "Мәселелер: {n}. Файлды түзетіп, қайта жүктеңіз.",
        "{n} problems: fix the file and upload it again.",
    ),  # noqa: E501
    "camp.first_problems": (
        "Показаны первые {n}; весь отчёт — в CSV.",
        "Алғашқы {n} көрсетілген; толық есеп — CSV-де.",
        "The first {n} are shown; the whole report is in the CSV.",
    ),  # noqa: E501
    "camp.no_problems": (
        "Проблем нет: все строки прошли проверку.",
        "Мәселе жоқ: барлық жолдар тексеруден өтті.",
        "No problems: every line passed.",
    ),  # noqa: E501
    "camp.report_csv": (
        "Скачать весь отчёт (CSV)",
        "Толық есепті жүктеу (CSV)",
        "Download the whole report (CSV)",
    ),
    "camp.code": ("Код", "Код", "Code"),
    # The campaign report's codes (service/campaigns/upload.py and service.py), for the report table.
    "report.invalid_phone": ("Не номер телефона", "Телефон нөмірі емес", "Not a phone number"),
    "report.not_mobile": (
        "Не мобильный номер Казахстана",
        "Қазақстанның ұялы нөмірі емес",
        "Not a Kazakhstan mobile number",
    ),
    "report.phone_scientific_notation": (
        "Номер в экспоненциальной записи: цифры потеряны, выгрузите столбец как текст",
        "Нөмір экспоненциалды түрде: цифрлар жоғалған, бағанды мәтін ретінде шығарыңыз",
        "Phone in scientific notation: its digits are lost; export the column as text",
    ),
    "report.missing_phone": ("Нет номера телефона", "Телефон нөмірі жоқ", "No phone"),
    "report.extra_columns": ("Лишние столбцы", "Артық бағандар", "Extra columns"),
    "report.invalid_json": ("Строка не JSON", "Жол JSON емес", "Not a JSON line"),
    "report.unknown_field": ("Неизвестное поле", "Белгісіз өріс", "Unknown field"),
    "report.duplicate_field": ("Поле повторяется", "Өріс қайталанады", "A field repeats"),
    "report.invalid_offer": ("Предложение не строка", "Ұсыныс жол емес", "The offer is not text"),
    "report.invalid_ref": ("Ссылка не строка", "Сілтеме жол емес", "The reference is not text"),
    "report.ref_too_long": (
        "Ссылка длиннее 64 символов",
        "Сілтеме 64 таңбадан ұзын",
        "Reference over 64 characters",
    ),
    "report.offer_too_long": (
        "Код предложения длиннее 64 символов",
        "Ұсыныс коды 64 таңбадан ұзын",
        "Offer code over 64 characters",
    ),
    "report.duplicate_ref": (
        "Ссылка повторяет более раннюю строку",
        "Сілтеме алдыңғы жолды қайталайды",
        "The reference repeats an earlier line",
    ),
    "report.duplicate_line": (
        "Тот же номер и предложение, что в более ранней строке",
        "Алдыңғы жолдағыдай нөмір мен ұсыныс",
        "The same phone and offer as an earlier line",
    ),
    "report.unknown_offer": (
        "Нет такого предложения в программе",
        "Бағдарламада мұндай ұсыныс жоқ",
        "Not an offer of this program",
    ),
    "report.offer_not_for_tariff": (
        "Предложение недоступно на этом тарифе сейчас",
        "Ұсыныс бұл тарифте қазір қолжетімсіз",
        "The offer is not available on this tariff now",
    ),
    "report.out_of_stock": (
        "В пуле не хватает кодов на всю кампанию",
        "Пулда бүкіл науқанға код жетпейді",
        "The pool has too few codes for the whole campaign",
    ),
    "report.over_budget_cap": (
        "Сумма больше лимита кампании",
        "Сома науқан лимитінен көп",
        "The total is over the campaign's cap",
    ),
    "report.over_program_budget": (
        "Сумма больше остатка бюджета программы за месяц",
        "Сома бағдарламаның айлық бюджет қалдығынан көп",
        "The total is over what is left of the program's monthly budget",
    ),
    "report.no_kk_template": (
        "Нет SMS-шаблона на казахском: закон о рекламе требует казахский текст",
        "Қазақ тіліндегі SMS үлгісі жоқ: жарнама туралы заң қазақ мәтінін талап етеді",
        "No Kazakh SMS template: the advertising law requires Kazakh",
    ),
    "report.no_lines": (
        "В файле нет ни одной строки, которую можно выполнить",
        "Файлда орындалатын бірде-бір жол жоқ",
        "The file has no line that can run",
    ),
    "camp.message": ("Описание", "Сипаттама", "Message"),
    "camp.upload": (
        "Файл кампании (CSV, JSONL или XLSX)",
        "Науқан файлы (CSV, JSONL немесе XLSX)",
        "Campaign file (CSV, JSONL or XLSX)",
    ),  # noqa: E501
    "camp.upload_hint": (
        "Столбцы: phone[,offer][,ref]. CSV в UTF-8 или Windows-1251, разделитель «,» или «;». Новая загрузка заменяет прежнюю.",  # noqa: E501
        "Бағандар: phone[,offer][,ref]. CSV UTF-8 немесе Windows-1251, бөлгіш «,» не «;». Жаңа жүктеу алдыңғысын ауыстырады.",  # noqa: E501
        "Columns: phone[,offer][,ref]. CSV in UTF-8 or Windows-1251, separated by , or ;. A new upload replaces the last one.",  # noqa: E501
    ),
    "camp.too_large": ("Файл больше 2 ГБ.", "Файл 2 ГБ-тан үлкен.", "The file is over 2 GB."),
    "camp.progress": ("Ход выполнения", "Орындалу барысы", "Progress"),
    "camp.settled": ("Обработано {n} из {total}", "{total} ішінен {n} өңделді", "{n} of {total} settled"),
    "camp.spent": ("Израсходовано", "Жұмсалды", "Spent"),
    "camp.reserved": ("В резерве бюджета", "Бюджет резервінде", "Reserved in the budget"),
    "camp.eta": ("Осталось примерно", "Шамамен қалды", "Time left, about"),
    "camp.eta_value": ("{m} мин {s} с", "{m} мин {s} с", "{m} min {s} s"),
    "camp.started": ("Начата", "Басталды", "Started"),
    "camp.finished": ("Завершена", "Аяқталды", "Finished"),
    "camp.refreshing": ("Обновляется каждые {s} с.", "Әр {s} с сайын жаңарады.", "Refreshes every {s} s."),
    "camp.results_csv": ("Результаты (CSV)", "Нәтижелер (CSV)", "Results (CSV)"),
    "camp.results_xlsx": ("Результаты (XLSX)", "Нәтижелер (XLSX)", "Results (XLSX)"),
    "camp.cancel_confirm": (
        "Отменить кампанию? Невыполненные строки не будут выданы; уже выданные останутся.",
        "Науқанды болдырмау керек пе? Орындалмаған жолдар берілмейді; берілгендері қалады.",
        "Cancel the campaign? Lines not yet run never run; the ones delivered stay.",
    ),
    "camp.move.submit": ("Отправить на согласование", "Келісуге жіберу", "Submit"),
    "camp.move.approve": ("Согласовать", "Келісу", "Approve"),
    "camp.move.reject": ("Отклонить", "Қабылдамау", "Reject"),
    "camp.move.pause": ("Приостановить", "Тоқтата тұру", "Pause"),
    "camp.move.resume": ("Продолжить", "Жалғастыру", "Resume"),
    "camp.move.cancel": ("Отменить кампанию", "Науқанды болдырмау", "Cancel the campaign"),
    "camp.created_ok": (
        "Черновик создан. Загрузите файл.",
        "Жоба құрылды. Файлды жүктеңіз.",
        "The draft is created. Upload its file.",
    ),  # noqa: E501
    "camp.uploaded_ok": (
        "Файл загружен и проверен: смотрите отчёт проверки ниже.",
        "Файл жүктеліп, тексерілді: төмендегі тексеру есебін қараңыз.",
        "The file is uploaded and checked: see the validation report below.",
    ),
    "camp.approved_ok": ("Кампания согласована.", "Науқан келісілді.", "The campaign is approved."),
    "camp.rejected_ok": (
        "Кампания отклонена и возвращена в черновик.",
        "Науқан қабылданбай, жобаға қайтарылды.",
        "The campaign is rejected and back to draft.",
    ),  # noqa: E501
    "camp.paused_ok": ("Кампания приостановлена.", "Науқан тоқтатылды.", "The campaign is paused."),
    "camp.resumed_ok": ("Кампания продолжается.", "Науқан жалғасуда.", "The campaign goes on."),
    "camp.cancelled_ok": ("Кампания отменена.", "Науқан болдырылмады.", "The campaign is cancelled."),
    "camp.status.draft": ("черновик", "жоба", "draft"),
    "camp.status.submitted": ("на согласовании", "келісуде", "submitted"),
    "camp.status.approved": ("согласована", "келісілді", "approved"),
    "camp.status.running": ("выполняется", "орындалуда", "running"),
    "camp.status.paused": ("приостановлена", "тоқтатылған", "paused"),
    "camp.status.done": ("завершена", "аяқталды", "done"),
    "camp.status.cancelled": ("отменена", "болдырылмады", "cancelled"),
    "action.campaign_create": ("создание кампании", "науқан құру", "create campaign"),
    "action.campaign_upload": ("загрузка файла кампании", "науқан файлын жүктеу", "upload campaign file"),
    "action.campaign_submit": ("отправка кампании", "науқанды жіберу", "submit campaign"),
    "action.campaign_approve": ("согласование кампании", "науқанды келісу", "approve campaign"),
    "action.campaign_reject": ("отклонение кампании", "науқанды қабылдамау", "reject campaign"),
    "action.campaign_pause": ("пауза кампании", "науқанды тоқтата тұру", "pause campaign"),
    "action.campaign_resume": ("продолжение кампании", "науқанды жалғастыру", "resume campaign"),
    "action.campaign_cancel": ("отмена кампании", "науқанды болдырмау", "cancel campaign"),
    "problem.same_person": (
        "Согласовать или отклонить кампанию может только другой сотрудник: вы её отправили.",
        "Науқанды басқа қызметкер ғана келісе немесе қабылдамай алады: оны сіз жібердіңіз.",
        "Another person must approve or reject this campaign: you submitted it.",
    ),
    "problem.campaign_state": (
        "В этом состоянии кампании так нельзя: {detail}",
        "Науқанның бұл күйінде олай болмайды: {detail}",
        "Not allowed in the campaign's state: {detail}",
    ),
    "problem.campaign_not_draft": (
        "Файл принимает только черновик.",
        "Файлды тек жоба қабылдайды.",
        "Only a draft takes a file.",
    ),
    "problem.campaign_not_valid": (
        "Кампания не прошла проверку: {detail}",
        "Науқан тексеруден өтпеді: {detail}",
        "The campaign's lines are not valid: {detail}",
    ),
    "problem.campaign_changed": (
        "Кампания изменилась с тех пор, как вы её открыли: обновите страницу.",
        "Сіз ашқаннан бері науқан өзгерді: бетті жаңартыңыз.",
        "The campaign changed since you opened it: reload the page.",
    ),
    "problem.upload_refused": (
        "Файл не принят: {detail}",
        "Файл қабылданбады: {detail}",
        "The file was refused: {detail}",
    ),  # noqa: E501
    "problem.budget_exceeded": (
        "Бюджет программы не вмещает эту сумму.",
        "Бағдарлама бюджеті бұл соманы көтермейді.",
        "The program's budget cannot hold this.",
    ),
    "problem.unknown_program": ("Неизвестная программа.", "Белгісіз бағдарлама.", "Unknown program."),
    "problem.unknown_offer": (
        "Этого предложения нет в программе.",
        "Бағдарламада бұл ұсыныс жоқ.",
        "The program has no such offer.",
    ),  # noqa: E501
    "problem.unknown_tariff": (
        "Этого тарифа нет в программе.",
        "Бағдарламада бұл тариф жоқ.",
        "The program has no such tariff.",
    ),  # noqa: E501
    "problem.offer_inactive": (
        "Предложение не активно.",
        "Ұсыныс белсенді емес.",
        "The offer is not active.",
    ),
    "problem.tariff_not_eligible": (
        "Предложение недоступно на этом тарифе.",
        "Ұсыныс бұл тарифте қолжетімсіз.",
        "The offer is not available on this tariff.",
    ),
    # refusals of the domain, by their stable problem code
    "problem.not_cancellable": (
        "Отменить нельзя: награда уже могла быть использована (SMS передано оператору или карта использована).",  # noqa: E501
        "Болдырмау мүмкін емес: сыйақы пайдаланылған болуы мүмкін (SMS операторға берілді немесе карта қолданылды).",  # noqa: E501
        "Cannot cancel: the reward may have been used (the SMS reached the provider, or the card was used).",
    ),
    "problem.not_resendable": (
        "Отменённое вознаграждение нельзя отправить повторно.",
        "Болдырылмаған сыйақыны қайта жіберуге болмайды.",
        "A cancelled redemption cannot be resent.",
    ),
    "problem.resend_limit_reached": (
        "Лимит повторных отправок исчерпан (не больше 3).",
        "Қайта жіберу шегі таусылды (3-тен аспайды).",
        "The resend limit is reached (3 at most).",
    ),
    "problem.card_not_blockable": (
        "Заблокировать можно только активную карту.",
        "Тек белсенді картаны бұғаттауға болады.",
        "Only an active card can be blocked.",
    ),
    "problem.card_not_blocked": (
        "Карта не заблокирована.",
        "Карта бұғатталмаған.",
        "The card is not blocked.",
    ),
    "problem.card_not_found": (
        "Карта с таким номером не найдена.",
        "Мұндай нөмірлі карта табылмады.",
        "No card has this number.",
    ),
    "problem.wrong_card_or_pin": (
        "Неверный номер карты или PIN. Осталось попыток: {remaining_attempts}.",
        "Карта нөмірі немесе PIN қате. Қалған әрекет: {remaining_attempts}.",
        "Wrong card number or PIN. Attempts left: {remaining_attempts}.",
    ),
    "problem.card_locked": (
        "Слишком много неверных PIN для этой карты, попробуйте позже.",
        "Бұл карта үшін қате PIN тым көп, кейінірек қайталаңыз.",
        "Too many wrong PINs for this card; try again later.",
    ),
    "problem.card_blocked": (
        "Карта заблокирована: покупателю нужно обратиться в поддержку.",
        "Карта бұғатталған: сатып алушы қолдау қызметіне хабарласуы керек.",
        "The card is blocked; the customer should call support.",
    ),
    "problem.card_cancelled": ("Карта аннулирована.", "Карта жойылды.", "The card was cancelled."),
    "problem.card_expired": ("Срок действия карты истёк.", "Картаның мерзімі өтті.", "The card has expired."),
    "problem.card_exhausted": (
        "Баланс карты израсходован.",
        "Карта қалдығы жұмсалды.",
        "The card's balance is used up.",
    ),
    "problem.not_exchangeable": (
        "Эту карту нельзя обменять на этот сертификат.",
        "Бұл картаны бұл сертификатқа айырбастауға болмайды.",
        "This card cannot be exchanged for this certificate.",
    ),
    "problem.insufficient_balance": (
        "Недостаточно средств на карте.",
        "Картада қаражат жеткіліксіз.",
        "The card's balance is too low.",
    ),
    "problem.out_of_stock": ("Сертификаты закончились.", "Сертификаттар таусылды.", "No certificates left."),
    "problem.rate_limited": (
        "Слишком много запросов, подождите минуту.",
        "Сұраныстар тым көп, бір минут күтіңіз.",
        "Too many requests; wait a minute.",
    ),
    "problem.period_not_ended": (
        "Месяц ещё не закончился.",
        "Ай әлі аяқталған жоқ.",
        "The month has not ended yet.",
    ),
    "problem.unknown_partner": ("Неизвестный партнёр.", "Белгісіз серіктес.", "Unknown partner."),
    "problem.validation_error": (
        "Файл не принят: {detail}",
        "Файл қабылданбады: {detail}",
        "The file was refused: {detail}",
    ),
}


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def translate(locale: str, key: str, **values: object) -> str:
    entry = MESSAGES.get(key)
    if entry is None:
        return key
    text = entry[LOCALES.index(locale) if locale in LOCALES else 0]
    return text.format_map(_Missing(values)) if values else text


def pick_locale(value: str | None) -> str:
    return value if value in LOCALES else DEFAULT_LOCALE


def format_money(minor: int | None, currency: str) -> str:
    """`5 000,00 ₸`: groups of three and the sign separated by no-break spaces, a decimal comma."""
    if minor is None:
        return "—"
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    grouped = f"{whole:,}".replace(",", NBSP)
    number = f"{sign}{grouped},{frac:0{exp}d}" if exp else f"{sign}{grouped}"
    return f"{number}{NBSP}{CURRENCY_SIGNS.get(currency, currency)}"


def money_of(value: dict | object | None) -> str:
    """A `Money` (or its JSON form) written the console's way."""
    if value is None:
        return "—"
    amount = value["amount"] if isinstance(value, dict) else value.amount  # type: ignore[attr-defined]
    currency = value["currency"] if isinstance(value, dict) else value.currency  # type: ignore[attr-defined]
    negative = amount.startswith("-")
    whole, _, frac = amount.lstrip("-").partition(".")
    exp = exponent(currency)
    minor = int(whole) * 10**exp + int((frac or "0").ljust(exp, "0")[:exp] or 0)
    return format_money(-minor if negative else minor, currency)


def format_time(value: datetime | None, zone: ZoneInfo | None = None, *, seconds: bool = False) -> str:
    """Local time of the program (DEFAULT_ZONE when none), e.g. `03.12.2026 14:05`."""
    if value is None:
        return "—"
    local = value.astimezone(zone or DEFAULT_ZONE)
    return local.strftime("%d.%m.%Y %H:%M:%S" if seconds else "%d.%m.%Y %H:%M")


def format_count(value: int) -> str:
    return f"{value:,}".replace(",", NBSP)


def mask_phone(msisdn: str) -> str:
    return mask_tail(msisdn, keep=4)
