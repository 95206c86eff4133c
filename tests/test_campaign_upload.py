"""The campaign file parser: CSV, JSONL and XLSX files in, lines and line errors out (no database)."""

from __future__ import annotations

import gc
import json
import os
import pathlib
import random
import re
import tracemalloc
from collections.abc import Sequence

import openpyxl  # type: ignore[import-untyped]
import pytest

from service.campaigns.upload import (
    Detected,
    Line,
    LineError,
    UploadRefused,
    _fast_msisdn,
    masked_phone,
    read_upload,
)
from service.kit.values.phones import normalize_msisdn


def write(tmp_path: pathlib.Path, name: str, content: bytes | str, encoding: str = "utf-8") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


def read(path: pathlib.Path, **kwargs: object) -> tuple[Detected, list[Line | LineError]]:
    detected, lines = read_upload(path, **kwargs)  # type: ignore[arg-type]
    return detected, list(lines)


def xlsx(tmp_path: pathlib.Path, rows: Sequence[Sequence[object]], name: str = "r.xlsx") -> pathlib.Path:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    path = tmp_path / name
    book.save(path)
    return path


def refused(path: pathlib.Path, **kwargs: object) -> str:
    with pytest.raises(UploadRefused) as caught:
        read_upload(path, **kwargs)  # type: ignore[arg-type]
    return caught.value.code


# --- CSV encodings and separators -------------------------------------------------------------------


def test_utf8_csv_with_header_is_read_and_reported(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "phone,offer,ref\n+77011234567,COFFEE,a-1\n")
    detected, lines = read(path)
    assert detected == Detected("csv", "utf-8", ",", True)
    assert lines == [Line(2, "+77011234567", "COFFEE", "a-1")]


def test_utf8_bom_csv_is_detected_and_the_bom_is_not_part_of_the_header(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "\ufeffPhone,Offer\n87011234567,Кофе\n")
    detected, lines = read(path)
    assert detected == Detected("csv", "utf-8-sig", ",", True)
    assert lines == [Line(2, "+77011234567", "Кофе", "2")]


def test_windows_1251_semicolon_csv_with_russian_header(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "Телефон;Оффер\r\n87011234567;Кофе\r\n7771234567;\r\n", "cp1251")
    detected, lines = read(path)
    assert detected == Detected("csv", "windows-1251", ";", True)
    assert lines == [Line(2, "+77011234567", "Кофе", "2"), Line(3, "+77771234567", None, "3")]


def test_comma_csv_separator_is_detected(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "msisdn,offer,external_ref\n7011234567,A,x\n")
    detected, lines = read(path)
    assert detected.separator == ","
    assert lines == [Line(2, "+77011234567", "A", "x")]


def test_semicolon_csv_whose_cells_hold_commas_is_still_semicolon(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", 'phone;offer;ref\n87011234567;A;"a,b,c"\n')
    detected, lines = read(path)
    assert detected.separator == ";"
    assert lines == [Line(2, "+77011234567", "A", "a,b,c")]


def test_quoted_cells_with_separators_quotes_and_newlines(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        'phone,offer,ref\n"+7 701 123 45 67","A","say ""hi"", ok"\n"87011234568",B,"two\nlines"\n',
    )
    _, lines = read(path)
    assert lines == [Line(2, "+77011234567", "A", 'say "hi", ok'), Line(3, "+77011234568", "B", "two\nlines")]


def test_headerless_csv_columns_are_phone_offer_ref(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "87011234567,A,r1\n87011234568\n87011234569,,r3\n")
    detected, lines = read(path)
    assert detected == Detected("csv", "utf-8", ",", False)
    assert lines == [
        Line(1, "+77011234567", "A", "r1"),
        Line(2, "+77011234568", None, "2"),
        Line(3, "+77011234569", None, "r3"),
    ]


def test_header_with_unknown_columns_keeps_the_known_ones(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "ФИО;Номер;Reference\nИванов И.;87011234567;r1\n")
    detected, lines = read(path)
    assert detected.header
    assert lines == [Line(2, "+77011234567", None, "r1")]


def test_blank_lines_are_skipped_and_numbers_stay_as_a_person_sees_them(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "phone\n\n87011234567\n   \n;;\nbad\n87011234568\n")
    _, lines = read(path)
    assert [(line.number, type(line).__name__) for line in lines] == [
        (3, "Line"),
        (6, "LineError"),
        (7, "Line"),
    ]
    assert lines[0] == Line(3, "+77011234567", None, "3")


def test_many_blank_lines_before_the_first_line_are_skipped(tmp_path: pathlib.Path) -> None:
    detected, lines = read(write(tmp_path, "r.csv", "\r\n" * 5000 + "87011234567\r\n"))
    assert lines == [Line(5001, "+77011234567", None, "5001")]
    assert refused(write(tmp_path, "blank.csv", " \n" * 5000)) == "empty_file"


def test_line_numbers_count_the_lines_of_a_multiline_quoted_cell(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", 'phone,ref\n87011234567,"a\nb"\n87011234568,c\n')
    _, lines = read(path)
    assert [line.number for line in lines] == [2, 4]


# --- phones ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["+7 (701) 123-45-67", "8 701 123 45 67", "87011234567", "7011234567", "+77011234567", "8(701)1234567"],
)
def test_every_phone_format_people_type_gives_e164(tmp_path: pathlib.Path, typed: str) -> None:
    path = write(tmp_path, "r.csv", f"phone;offer\n{typed};A\n")
    _, lines = read(path)
    assert lines == [Line(2, "+77011234567", "A", "2")]


def test_a_windows_1251_file_is_not_taken_for_utf8_by_its_first_bytes(tmp_path: pathlib.Path) -> None:
    body = "phone;offer\n" + "87011234567;A\n" * 5000 + "87011234568;Кофе\n"
    detected, lines = read(write(tmp_path, "r.csv", body, "cp1251"))
    assert detected.encoding == "windows-1251"
    assert lines[-1] == Line(5002, "+77011234568", "Кофе", "5002")


def test_a_lost_leading_plus_is_normalised(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "phone\n77011234567\n77771234567\n")
    _, lines = read(path)
    assert [line.phone for line in lines if isinstance(line, Line)] == ["+77011234567", "+77771234567"]


@pytest.mark.parametrize("shown", ["7.70123E+10", "7,70123E+10", "7.7012E10", "7.70123e+10"])
def test_scientific_notation_in_csv_is_an_error_never_a_guess(tmp_path: pathlib.Path, shown: str) -> None:
    path = write(tmp_path, "r.csv", f'phone;offer\n"{shown}";A\n')
    _, lines = read(path)
    assert len(lines) == 1
    assert isinstance(lines[0], LineError)
    assert (lines[0].number, lines[0].code) == (2, "phone_scientific_notation")


def test_a_landline_is_not_mobile(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "phone\n+77172123456\n")
    _, lines = read(path)
    assert [(line.number, getattr(line, "code", None)) for line in lines] == [(2, "not_mobile")]
    assert "+7 717 …" in lines[0].message  # type: ignore[union-attr]


@pytest.mark.parametrize("garbage", ["hello", "12345", "+7 701", "701-CALL-ME-NOW-PLEASE-12"])
def test_a_garbage_phone_is_invalid_phone(tmp_path: pathlib.Path, garbage: str) -> None:
    path = write(tmp_path, "r.csv", f"phone,offer\n{garbage},A\n")
    _, lines = read(path)
    assert len(lines) == 1 and isinstance(lines[0], LineError)
    assert lines[0].code == "invalid_phone"


def test_a_line_without_a_phone_is_missing_phone(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "phone,offer\n,A\n")
    _, lines = read(path)
    assert [(line.number, getattr(line, "code", None)) for line in lines] == [(2, "missing_phone")]


def test_extra_columns_are_a_line_error(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "87011234567,A,r1,surprise\n87011234568,A,r2,,\n")
    _, lines = read(path)
    assert isinstance(lines[0], LineError) and lines[0].code == "extra_columns"
    assert lines[1] == Line(2, "+77011234568", "A", "r2")  # trailing empty cells are no extra column


def test_ref_and_offer_are_trimmed_and_limited_to_64_characters(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        f"phone,offer,ref\n87011234567, A , r \n87011234567,A,{'r' * 65}\n87011234567,{'o' * 65},\n",
    )
    _, lines = read(path)
    assert lines[0] == Line(2, "+77011234567", "A", "r")
    assert [getattr(line, "code", None) for line in lines[1:]] == ["ref_too_long", "offer_too_long"]


def test_fast_path_agrees_with_normalize_msisdn_for_every_operator_prefix() -> None:
    rng = random.Random(7)
    for prefix in range(700, 800):
        for _ in range(3):
            rest = f"{rng.randrange(10**7):07d}"
            number = f"{prefix}{rest}"
            forms = [
                f"+7{number}",
                f"7{number}",
                f"8{number}",
                number,
                f"+7 ({prefix}) {rest[:3]}-{rest[3:5]}-{rest[5:]}",
                f"8 {prefix} {rest[:3]} {rest[3:5]} {rest[5:]}",
                f"8-{prefix}-{rest}",
            ]
            for form in forms:
                try:
                    expected: str | None = normalize_msisdn(form)
                except ValueError:
                    expected = None
                fast = _fast_msisdn(form)
                # the fast path answers only when it is sure; then it must say what phonenumbers says
                if fast is not None:
                    assert fast == expected, form
                else:
                    assert expected is None or not prefix_is_fast(prefix), form


def test_fast_path_agrees_with_normalize_msisdn_on_randomly_punctuated_numbers() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(20_000):
        base = rng.choice(["+7", "7", "8", ""]) + rng.choice(["701", "777", "747", "785", "700", "717"])
        chars = list(base + f"{rng.randrange(10**7):07d}")
        for _ in range(rng.randrange(5)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(" -()+\u00a0\t."))
        form = "".join(chars)
        fast = _fast_msisdn(form)
        if fast is None:
            continue
        checked += 1
        assert fast == normalize_msisdn(form), repr(form)
    assert checked > 5_000


def prefix_is_fast(prefix: int) -> bool:
    return _fast_msisdn(f"+7{prefix}1234567") is not None


def test_fast_path_takes_exactly_the_prefixes_phonenumbers_calls_mobile() -> None:
    for prefix in range(700, 800):
        try:
            normalize_msisdn(f"+7{prefix}1234567")
            mobile = True
        except ValueError:
            mobile = False
        assert prefix_is_fast(prefix) == mobile, prefix


@pytest.mark.parametrize(
    "form",
    [
        "+87011234567",
        "+7011234567",
        "787011234567",
        "97011234567",
        "+7 701 123 45 678",
        "8 701 123 45 6",
        "+7-701-123-45-67",
        "+ 7 701 123 45 67",
        "(8701) 123 45 67",
        " 87011234567 ",
        "8\u00a0701\u00a0123\u00a045\u00a067",
        "+79161234567",
        "89161234567",
        "+77172123456",
        "+7 600 123 45 67",
        "+7 751 123 45 67",
        "٨٧٠١١٢٣٤٥٦٧",
        "7.70123E+10",
        "abc",
        "",
    ],
)
def test_every_phone_the_parser_takes_is_what_normalize_msisdn_gives(form: str) -> None:
    try:
        expected: str | None = normalize_msisdn(form)
    except ValueError:
        expected = None
    if expected is not None and not expected.startswith("+77"):
        expected = None  # another country's mobile (+7 9.. is Russia): no campaign line
    fast = _fast_msisdn(form)
    assert fast is None or fast == expected
    with_parser = parse_one_phone(form)
    assert with_parser == expected


def parse_one_phone(form: str) -> str | None:
    from service.campaigns.upload import _phone

    result = _phone(form)
    return result if isinstance(result, str) else None


# --- masking ---------------------------------------------------------------------------------------


def test_masked_phone_keeps_country_code_and_operator_prefix_only() -> None:
    assert masked_phone("+77011234567") == "+7 701 …"
    assert masked_phone("87011234567") == "+7 701 …"
    assert masked_phone("7011234567") == "+7 701 …"
    assert masked_phone("+7 (701) 123-45-67") == "+7 701 …"
    garbage = masked_phone("7.70123E+10")
    assert garbage.endswith("…") and len(garbage) <= 5


def test_no_message_carries_a_full_phone(tmp_path: pathlib.Path) -> None:
    phones = ["+77172123456", "7.70123E+10", "8 701 123 45 6", "+7 701 123 45 67 89", "77011234567890"]
    rows = "".join(f"{phone}\n" for phone in phones)
    path = write(
        tmp_path, "r.csv", "phone;offer\n" + rows + "+77011234567;A;r;extra\n" + f"87011234568;{'o' * 70}\n"
    )
    _, lines = read(path)
    errors = [line for line in lines if isinstance(line, LineError)]
    assert len(errors) == len(phones) + 2
    for error, phone in zip(errors, [*phones, "+77011234567", "87011234568"], strict=True):
        tail = re.sub(r"\D", "", phone)[4:]
        assert tail[:4] not in re.sub(r"\D", "", error.message), (error, phone)


# --- JSONL -----------------------------------------------------------------------------------------


def test_jsonl_lines_are_objects_with_phone_offer_ref(tmp_path: pathlib.Path) -> None:
    content = '{"phone": "+77011234567", "offer": "A", "ref": "r1"}\n\n{"msisdn": 87011234568}\n'
    detected, lines = read(write(tmp_path, "r.jsonl", content))
    assert detected == Detected("jsonl", "utf-8", None, False)
    assert lines == [Line(1, "+77011234567", "A", "r1"), Line(3, "+77011234568", None, "3")]


def test_jsonl_bad_json_and_unknown_field_are_line_errors(tmp_path: pathlib.Path) -> None:
    content = '{"phone": "+77011234567"\n{"phone": "+77011234567", "name": "Aigerim"}\n'
    content += '[1]\n{"phone": "87011234567"}\n'
    _, lines = read(write(tmp_path, "r.jsonl", content))
    assert [getattr(line, "code", "ok") for line in lines] == [
        "invalid_json",
        "unknown_field",
        "invalid_json",
        "ok",
    ]


def test_jsonl_scientific_float_phone_is_an_error(tmp_path: pathlib.Path) -> None:
    content = '{"phone": 7.70123e10}\n{"phone": 77011234567}\n{"phone": "7.70123E+10"}\n'
    _, lines = read(write(tmp_path, "r.jsonl", content))
    assert [getattr(line, "code", "ok") for line in lines] == [
        "phone_scientific_notation",
        "ok",
        "phone_scientific_notation",
    ]


def test_jsonl_is_sniffed_without_a_name(tmp_path: pathlib.Path) -> None:
    detected, lines = read(write(tmp_path, "upload", '  {"phone": "87011234567"}\n'))
    assert detected.format == "jsonl" and len(lines) == 1


# --- XLSX ------------------------------------------------------------------------------------------


def test_xlsx_rows_with_numbers_and_text(tmp_path: pathlib.Path) -> None:
    path = xlsx(
        tmp_path, [["Phone", "Offer", "Ref"], [77011234567, "A", 17], [None], ["8 701 123 45 68", None, None]]
    )
    detected, lines = read(path)
    assert detected == Detected("xlsx", None, None, True)
    assert lines == [Line(2, "+77011234567", "A", "17"), Line(4, "+77011234568", None, "4")]


def test_xlsx_scientific_notation_is_an_error(tmp_path: pathlib.Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["phone"])
    sheet.append(["7.70123E+10"])
    sheet.append(["7,70123E+10"])
    sheet.append([77012300000])
    sheet["A4"].number_format = "0.00E+00"  # what Excel makes of 7.70123E+10 typed or pasted in
    sheet.append([77011234567.0])  # a float with an integer value, shown as digits: the digits are there
    path = tmp_path / "r.xlsx"
    book.save(path)
    _, lines = read(path)
    assert [getattr(line, "code", "ok") for line in lines] == ["phone_scientific_notation"] * 3 + ["ok"]
    assert lines[3] == Line(5, "+77011234567", None, "5")


def test_xlsx_headerless_rows_keep_their_sheet_row_numbers(tmp_path: pathlib.Path) -> None:
    path = xlsx(tmp_path, [[None], ["87011234567", "A"], [None], ["87011234568"]])
    detected, lines = read(path)
    assert not detected.header
    assert [line.number for line in lines] == [2, 4]


def test_a_file_named_xlsx_that_is_not_a_zip_is_unreadable(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.xlsx", "phone\n87011234567\n")
    assert refused(path, filename="r.xlsx") == "unreadable_file"


def test_a_zip_that_is_no_workbook_is_unreadable(tmp_path: pathlib.Path) -> None:
    import zipfile

    path = tmp_path / "r.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert refused(path) == "unreadable_file"


def test_xlsx_is_sniffed_from_its_bytes(tmp_path: pathlib.Path) -> None:
    path = xlsx(tmp_path, [["87011234567"]], name="upload.bin")
    detected, _ = read(path, content_type="application/octet-stream")
    assert detected.format == "xlsx"


# --- whole-file refusals ---------------------------------------------------------------------------


def test_an_empty_file_is_refused(tmp_path: pathlib.Path) -> None:
    assert refused(write(tmp_path, "r.csv", "")) == "empty_file"
    assert refused(write(tmp_path, "b.csv", "\ufeff\n \n\n")) == "empty_file"
    assert refused(write(tmp_path, "r.jsonl", "\n\n")) == "empty_file"


def test_a_header_only_file_is_refused(tmp_path: pathlib.Path) -> None:
    assert refused(write(tmp_path, "r.csv", "phone;offer\n\n")) == "header_only"
    assert refused(xlsx(tmp_path, [["phone"]])) == "header_only"


def test_a_binary_file_is_refused(tmp_path: pathlib.Path) -> None:
    data = bytes(random.Random(1).randrange(256) for _ in range(5000)) + b"\0"
    assert refused(write(tmp_path, "r.csv", b"phone\n" + data), filename="r.csv") == "unreadable_file"
    assert refused(write(tmp_path, "noname", data)) == "unreadable_file"


def test_control_characters_without_nul_are_refused(tmp_path: pathlib.Path) -> None:
    data = bytes(range(1, 9)) * 50 + b"87011234567\n"
    assert refused(write(tmp_path, "r.csv", data)) == "unreadable_file"


def test_a_header_without_a_phone_column_is_refused(tmp_path: pathlib.Path) -> None:
    assert refused(write(tmp_path, "r.csv", "offer,ref\nA,r1\n")) == "missing_phone_column"
    assert refused(write(tmp_path, "s.csv", "Name,Surname\nAigerim,S\n")) == "missing_phone_column"


def test_an_unsupported_format_is_refused(tmp_path: pathlib.Path) -> None:
    assert refused(write(tmp_path, "r.xls", b"\xd0\xcf\x11\xe0rest"), filename="r.xls") == "unknown_format"
    assert refused(write(tmp_path, "a.json", '[{"phone": "87011234567"}]')) == "unknown_format"


def test_format_comes_from_content_type_before_the_name(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.txt", '{"phone": "87011234567"}\n')
    detected, _ = read(path, filename="r.csv", content_type="application/x-ndjson")
    assert detected.format == "jsonl"
    detected, _ = read(
        write(tmp_path, "s.txt", "87011234567\n"),
        filename="list.csv",
        content_type="application/vnd.ms-excel",
    )
    assert detected.format == "csv"


def test_too_many_lines_are_refused_before_any_line_is_read(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "r.csv", "phone\n" + "87011234567\n" * 4)
    assert refused(path, max_lines=3) == "too_many_lines"
    assert len(read(path, max_lines=4)[1]) == 4
    assert (
        refused(write(tmp_path, "r.jsonl", '{"phone": "87011234567"}\n' * 4), max_lines=3) == "too_many_lines"
    )


def test_too_many_xlsx_lines_stop_the_iterator(tmp_path: pathlib.Path) -> None:
    path = xlsx(tmp_path, [["phone"]] + [["87011234567"]] * 4)
    _, lines = read_upload(path, max_lines=3)
    assert len([next(lines) for _ in range(3)]) == 3
    with pytest.raises(UploadRefused) as caught:
        next(lines)
    assert caught.value.code == "too_many_lines"


# --- streaming -------------------------------------------------------------------------------------


def test_a_200k_line_file_streams_in_small_memory(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "big.csv"
    rng = random.Random(3)
    with open(path, "w", encoding="utf-8") as file:
        file.write("phone;offer;ref\n")
        for i in range(200_000):
            file.write(f"8 701 {rng.randrange(10**7):07d};OFFER{i % 7};ref-{i}\n")
    assert os.path.getsize(path) > 5_000_000
    list(read_upload(write(tmp_path, "warm.csv", "87011234567\nbad\n"))[1])  # load what is loaded once
    gc.collect()
    tracemalloc.start()
    try:
        detected, lines = read_upload(path)
        count = sum(1 for line in lines if isinstance(line, Line))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert detected.header and count == 200_000
    assert peak < 8_000_000, peak  # the file is > 5 MB and its lines as objects would be > 50 MB


def test_json_module_used_for_jsonl_keeps_float_source_text() -> None:
    # the JSONL reader relies on parse_float to tell 7.70123e10 from 77011234567
    assert json.loads("7.70123e10", parse_float=str) == "7.70123e10"


@pytest.mark.parametrize("foreign", ["+79161234567", "+14155552671", "+447911123456"])
def test_another_countrys_mobile_number_is_not_a_kazakhstan_mobile_number(tmp_path, foreign):
    path = tmp_path / "lines.csv"
    path.write_text(f"phone\n{foreign}\n", encoding="utf-8")
    _, lines = read_upload(path)
    (error,) = list(lines)
    assert isinstance(error, LineError) and error.code == "not_mobile"
    assert "not a Kazakhstan mobile number" in error.message and foreign[4:] not in error.message
