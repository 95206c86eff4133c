"""The closing act as PDF: Russian (with a Kazakh subtitle), totals per product, VAT rate and source
(on-demand redemptions, then each campaign by its name), totals per source, totals per record type,
the registry's numbers and SHA-256, signature blocks.

Text is real text in an embedded Unicode TrueType font (Roboto, shipped by the `font-roboto` PyPI
package: Cyrillic including the Kazakh letters and the tenge sign), so it can be searched, copied
and extracted; amounts are formatted from integer minor units."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import font_roboto
from fpdf import FPDF
from fpdf.fonts import FontFace

from service.kit.values.money import to_decimal_string
from service.ledger.totals import CampaignLine, Totals

MONTHS_RU = (
    "январь",
    "февраль",
    "март",
    "апрель",
    "май",
    "июнь",
    "июль",
    "август",
    "сентябрь",
    "октябрь",
    "ноябрь",
    "декабрь",
)
MONTHS_KK = (
    "қаңтар",
    "ақпан",
    "наурыз",
    "сәуір",
    "мамыр",
    "маусым",
    "шілде",
    "тамыз",
    "қыркүйек",
    "қазан",
    "қараша",
    "желтоқсан",
)
TYPES_RU = {
    "issue": "Выдача",
    "cancel": "Отмена (сторно)",
    "exchange": "Обмен карты",
    "breakage": "Истечение (breakage)",
}
CURRENCY_SIGN = {"KZT": "₸"}
ON_DEMAND_RU = "По запросу (за баллы)"


def source_ru(line: Mapping[str, Any]) -> str:
    """The source of a totals line: the on-demand redemptions, or a campaign by its name."""
    if line.get("campaign_id") is None:
        return ON_DEMAND_RU
    return f"Кампания «{line.get('campaign_name') or line['campaign_id']}»"


@lru_cache
def font_paths() -> tuple[Path, Path]:
    files = font_roboto.font_files
    return Path(files["Roboto"]), Path(files["RobotoBold"])


def amount(minor: int, currency: str) -> str:
    """1234567 tiyn -> '12 345,67' (Russian grouping with a thin no-break space, decimal comma)."""
    text = to_decimal_string(minor, currency)
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    groups: list[str] = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return sign + "\u202f".join(groups) + ("," + frac if frac else "")


def rate(bp: int) -> str:
    whole, frac = divmod(bp, 100)
    return f"{whole}" if frac == 0 else f"{whole},{frac:02d}".rstrip("0")


def month_title_ru(month: date) -> str:
    return f"{MONTHS_RU[month.month - 1]} {month.year} г."


def render_act(
    *, period: dict[str, Any], program: dict[str, Any], totals: Totals, registry: dict[str, str]
) -> bytes:
    """period: month, act_number, registry_number, closed_at (aware, local); program: code, name,
    timezone, currency; totals: as frozen by the close; registry: kind -> sha256."""
    pdf = _act_document(period)
    _act_heading(pdf, period, program)
    _act_products(pdf, totals, CURRENCY_SIGN.get(program["currency"], program["currency"]))
    _act_campaigns(pdf, totals, program["currency"])
    _act_types(pdf, totals, program["currency"])
    notes = _act_note_lines(period, totals, registry)
    # The notes and the signatures stay on one page: a page that holds only signatures could be put
    # under any act, and the accountant signs what the checksums above the signature name.
    if pdf.will_page_break(_act_notes_height(pdf, notes) + SIGNATURES_HEIGHT):
        pdf.add_page()
    _act_notes(pdf, notes)
    _act_signatures(pdf)
    return bytes(pdf.output())


class _ActPages(FPDF):
    """Every page of an act says which act it belongs to and which page of how many it is."""

    def __init__(self, title: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.act_title = title

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("Roboto", "", 8)
        self.cell(0, 5, f"{self.act_title} — стр. {self.page_no()} из {{nb}}", align="R")


_HEAD_STYLE = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))


def _act_document(period: dict[str, Any]) -> FPDF:
    regular, bold = font_paths()
    pdf = _ActPages(f"Акт № {period['act_number']}", orientation="L", unit="mm", format="A4")
    pdf.set_creation_date(period["closed_at"])
    pdf.set_title(f"Акт № {period['act_number']}")
    pdf.set_author("Reward fulfillment service")
    pdf.set_lang("ru")
    pdf.add_font("Roboto", "", str(regular))
    pdf.add_font("Roboto", "B", str(bold))
    pdf.set_margins(15, 12, 15)
    pdf.set_auto_page_break(True, 15)
    pdf.add_page()
    return pdf


def _act_heading(pdf: FPDF, period: dict[str, Any], program: dict[str, Any]) -> None:
    """Title (Russian, then Kazakh), place and date, the program and the period."""
    month: date = period["month"]
    closed_local: datetime = period["closed_at"]
    currency = program["currency"]
    sign = CURRENCY_SIGN.get(currency, currency)
    width = pdf.epw
    pdf.set_font("Roboto", "B", 16)
    pdf.cell(width, 9, f"АКТ № {period['act_number']}", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Roboto", "", 12)
    pdf.cell(
        width,
        6,
        f"выдачи цифровых вознаграждений за {month_title_ru(month)}",
        align="C",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Roboto", "", 10)
    pdf.cell(
        width,
        5,
        f"Цифрлық сыйақыларды беру актісі — {month.year} ж. {MONTHS_KK[month.month - 1]}",
        align="C",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    pdf.cell(width / 2, 5, "г. Алматы")
    pdf.cell(
        width / 2, 5, f"Дата составления: {closed_local:%d.%m.%Y}", align="R", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.ln(2)
    last_day = (date(month.year + (month.month == 12), month.month % 12 + 1, 1)).toordinal() - 1
    pdf.multi_cell(
        width,
        5,
        f"Программа лояльности: {program['name']} ({program['code']}). "
        f"Отчётный период: {month:%d.%m.%Y} — {date.fromordinal(last_day):%d.%m.%Y} "
        f"(часовой пояс {program['timezone']}). Валюта: {currency}. "
        f"Все суммы в {sign}; НДС включён в номинал.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)


def _act_products(pdf: FPDF, totals: Totals, sign: str) -> None:
    """Section 1: a line per product, VAT rate and source (on-demand first, then each campaign), then
    the totals per currency."""
    pdf.set_font("Roboto", "B", 11)
    pdf.cell(pdf.epw, 6, "1. Итоги по товарам", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Roboto", "", 8.5)
    header = (
        "№",
        "Артикул / товар",
        "Основание",
        "Партнёр",
        "Кол-во",
        f"Номинал, {sign}",
        f"Себестоимость, {sign}",
        "НДС, %",
        f"в т.ч. НДС, {sign}",
    )
    with pdf.table(
        col_widths=(8, 66, 38, 28, 16, 30, 32, 14, 30),
        text_align=("CENTER", "LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
        headings_style=_HEAD_STYLE,
        line_height=5,
        width=pdf.epw,
    ) as table:
        table.row(header)
        for i, line in enumerate(totals["by_product"], start=1):
            cur = line["currency"]
            table.row(
                (
                    str(i),
                    f"{line['sku']} — {line['name']}",
                    source_ru(line),
                    line.get("partner_name") or line.get("partner") or "—",
                    str(line["quantity"]),
                    amount(line["face_value_minor"], cur),
                    amount(line["cost_minor"], cur),
                    rate(line["vat_rate_bp"]),
                    amount(line["vat_minor"], cur),
                )
            )
        for cur, t in sorted(totals["by_currency"].items()):
            table.row(
                (
                    "",
                    f"Итого ({cur})",
                    "",
                    "",
                    str(t["quantity"]),
                    amount(t["face_value_minor"], cur),
                    amount(t["cost_minor"], cur),
                    "",
                    amount(t["vat_minor"], cur),
                ),
                style=_HEAD_STYLE,
            )
    pdf.ln(4)


def _act_campaigns(pdf: FPDF, totals: Totals, currency: str) -> None:
    """Section 2: the totals per source: the on-demand redemptions (points debited), then each
    campaign's grants (no points debited), by name; each currency's lines add up to its total."""
    lines: list[CampaignLine] = totals.get("by_campaign") or []
    sign = CURRENCY_SIGN.get(currency, currency)
    pdf.set_font("Roboto", "B", 11)
    pdf.cell(pdf.epw, 6, "2. Итоги по основаниям выдачи", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Roboto", "", 8.5)
    with pdf.table(
        col_widths=(100, 25, 20, 35, 35, 35),
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
        headings_style=_HEAD_STYLE,
        line_height=5,
        width=250,
        align="LEFT",
    ) as table:
        table.row(
            (
                "Основание",
                "Записей",
                "Кол-во",
                f"Номинал, {sign}",
                f"Себестоимость, {sign}",
                f"в т.ч. НДС, {sign}",
            )
        )
        for t in lines:
            cur = t["currency"]
            table.row(
                (
                    source_ru(t) + ("" if cur == currency else f" ({cur})"),
                    str(t["records"]),
                    str(t["quantity"]),
                    amount(t["face_value_minor"], cur),
                    amount(t["cost_minor"], cur),
                    amount(t["vat_minor"], cur),
                )
            )
    pdf.set_font("Roboto", "", 8)
    pdf.multi_cell(
        pdf.epw,
        4.4,
        "Выдачи по кампаниям — вознаграждения без списания баллов участника.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)


def _act_types(pdf: FPDF, totals: Totals, currency: str) -> None:
    """Section 3: the totals per kind of event (issue, cancel, exchange, breakage)."""
    sign = CURRENCY_SIGN.get(currency, currency)
    pdf.set_font("Roboto", "B", 11)
    pdf.cell(pdf.epw, 6, "3. Итоги по видам операций", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Roboto", "", 8.5)
    with pdf.table(
        col_widths=(70, 25, 20, 35, 35, 35),
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
        headings_style=_HEAD_STYLE,
        line_height=5,
        width=220,
        align="LEFT",
    ) as table:
        table.row(
            (
                "Вид операции",
                "Записей",
                "Кол-во",
                f"Номинал, {sign}",
                f"Себестоимость, {sign}",
                f"в т.ч. НДС, {sign}",
            )
        )
        for t in totals["by_type"]:
            cur = t["currency"]
            table.row(
                (
                    TYPES_RU.get(t["type"], t["type"]) + ("" if cur == currency else f" ({cur})"),
                    str(t["records"]),
                    str(t["quantity"]),
                    amount(t["face_value_minor"], cur),
                    amount(t["cost_minor"], cur),
                    amount(t["vat_minor"], cur),
                )
            )
    pdf.ln(4)


NOTE_LINE_MM = 4.6
NOTES_GAP_MM = 8
SIGNATURES_HEIGHT = 6 + 4 * 7  # the role's line and four lines of 7 mm


def _act_note_lines(period: dict[str, Any], totals: Totals, registry: dict[str, str]) -> list[str]:
    """The record count, the registry and its checksums, how VAT was computed."""
    late = totals.get("late_records", 0)
    return [
        f"Всего записей сверки: {totals['records']}"
        + (f", из них {late} — события прошлых закрытых периодов, проведённые в этом периоде" if late else "")
        + f". Приложение: реестр № {period['registry_number']} (каждая запись периода, пронумерована).",
        *(f"SHA-256 реестра ({kind}): {digest}" for kind, digest in registry.items()),
        "НДС рассчитан по ставке, действующей на дату события (ставки заданы в конфигурации с датой "
        "начала действия: 12 % в 2025 г., 16 % с 01.01.2026); момент начисления НДС (при продаже или при "
        "погашении) задан для каждого товара. Коды идентифицированы последними 4 символами и отпечатком.",
    ]


def _act_notes_height(pdf: FPDF, notes: list[str]) -> float:
    pdf.set_font("Roboto", "", 9)
    height = float(NOTES_GAP_MM)
    for note in notes:
        # output="HEIGHT" returns the height alone (the declared type is the union of every output)
        height += cast(float, pdf.multi_cell(pdf.epw, NOTE_LINE_MM, note, dry_run=True, output="HEIGHT"))
    return height


def _act_notes(pdf: FPDF, notes: list[str]) -> None:
    pdf.set_font("Roboto", "", 9)
    for note in notes:
        pdf.multi_cell(pdf.epw, NOTE_LINE_MM, note, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(NOTES_GAP_MM)


def _act_signatures(pdf: FPDF) -> None:
    col = (pdf.epw - 20) / 2
    y = pdf.get_y()
    for x, role in ((pdf.l_margin, "Исполнитель"), (pdf.l_margin + col + 20, "Заказчик")):
        pdf.set_xy(x, y)
        pdf.set_font("Roboto", "B", 10)
        pdf.cell(col, 6, role, new_x="LEFT", new_y="NEXT")
        pdf.set_font("Roboto", "", 9)
        for line in (
            "Должность: ______________________________",
            "Подпись: ____________ / ____________________ /",
            "Дата: «____» ______________ 20___ г.",
            "М.П.",
        ):
            pdf.cell(col, 7, line, new_x="LEFT", new_y="NEXT")
