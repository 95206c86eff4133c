"""Catalog files: validated with file:line errors, applied atomically and idempotently."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from catalog import DEMO_CATALOG
from catalog.loader import CatalogError, load_catalog
from service.catalog.models import Offer, OfferPrice, Partner, Product, Program, Tariff
from service.catalog.service import apply_catalog
from service.kit.db.engine import new_session, transaction


def _counts() -> dict[str, int]:
    with new_session() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m))
            for m in (Partner, Product, Program, Tariff, Offer, OfferPrice)
        }


def _snapshot() -> list:
    with new_session() as s:
        return [
            tuple(r)
            for r in s.execute(
                text(
                    "SELECT o.code, p.code, o.name, o.active, op.nominal_minor, op.points, t.code"
                    " FROM offers o"
                    " JOIN programs p ON p.id = o.program_id JOIN offer_prices op ON op.offer_id = o.id"
                    " JOIN tariffs t ON t.id = op.tariff_id ORDER BY 1, 2, 7"
                )
            )
        ]


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, target, ignore=shutil.ignore_patterns("codes"))
    return target


def test_demo_catalog_models_the_first_customer():
    spec = load_catalog(DEMO_CATALOG).spec
    assert len(spec.programs) >= 2 and all(len(p.tariffs) >= 2 for p in spec.programs)
    code_partners = {p.partner for p in spec.products if p.kind == "code"}
    assert len(code_partners) >= 2
    card = next(p for p in spec.products if p.kind == "universal_card")
    by_sku = {p.sku: p for p in spec.products}
    assert len({by_sku[s].partner for s in card.exchange_catalog}) >= 2
    assert any(o.product == card.sku for o in spec.offers)
    assert all({"ru", "kk", "en"} <= set(p.templates.code.model_dump()) for p in spec.programs)


def test_applying_the_same_catalog_twice_changes_nothing(db):
    loaded = load_catalog(DEMO_CATALOG)
    with transaction() as s:
        first = apply_catalog(s, loaded)
    counts, rows = _counts(), _snapshot()
    with transaction() as s:
        second = apply_catalog(s, loaded)
    assert first.changed and first.created["offers"] == len(loaded.spec.offers)
    assert not second.changed
    assert _counts() == counts and _snapshot() == rows


def test_a_changed_catalog_updates_and_deactivates_what_is_gone(db, catalog_copy: Path):
    with transaction() as s:
        apply_catalog(s, load_catalog(catalog_copy))
    offers = catalog_copy / "offers.yaml"
    text_ = offers.read_text().replace("points: 1600", "points: 1700")
    text_ = text_.replace("  - code: taxi-1500\n", "  - code: taxi-1500-gone\n").replace(
        'product: TULPAR-RIDE-1500\n    name: "Taxi ride', 'product: TULPAR-RIDE-1500\n    name: "Taxi ride'
    )
    offers.write_text(text_)
    with transaction() as s:
        summary = apply_catalog(s, load_catalog(catalog_copy))
    assert summary.changed
    assert summary.deactivated == {"offers": 1} and summary.created == {"offers": 1}
    with new_session() as s:
        assert s.scalar(select(func.count()).select_from(OfferPrice).where(OfferPrice.points == 1700)) == 1
        assert s.scalar(select(Offer.active).where(Offer.code == "taxi-1500")) is False


def test_unknown_tariff_is_reported_with_file_and_line(catalog_copy: Path):
    offers = catalog_copy / "offers.yaml"
    lines = offers.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if 'tariffs: [unlimited], nominal: "2000.00"' in line)
    lines[index] = lines[index].replace("[unlimited]", "[unlimitd]")
    offers.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_copy)
    (problem,) = caught.value.problems
    assert problem.file.endswith("offers.yaml") and problem.line == index + 1
    assert "unlimitd" in problem.message


def test_unquoted_money_is_refused_because_yaml_reads_it_as_a_float(catalog_copy: Path):
    products = catalog_copy / "products.yaml"
    products.write_text(products.read_text().replace('face_value: "2000.00"', "face_value: 2000.00", 1))
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_copy)
    (problem,) = caught.value.problems
    assert problem.file.endswith("products.yaml") and "quoted decimal" in problem.message
    assert "face_value" in problem.where and problem.line > 1


def test_a_programs_sms_deadline_is_applied_and_one_outside_1_to_168_hours_is_refused(db, catalog_copy: Path):
    with transaction() as s:
        apply_catalog(s, load_catalog(DEMO_CATALOG))
    with new_session() as s:
        assert dict(s.execute(select(Program.code, Program.sms_deadline_hours)).all()) == {
            "mobile-bonus": None,
            "home-internet": None,
            "business": 4,
        }
    programs = catalog_copy / "programs.yaml"
    programs.write_text(programs.read_text().replace("sms_deadline_hours: 4", "sms_deadline_hours: 0"))
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_copy)
    (problem,) = caught.value.problems
    assert (
        problem.file.endswith("programs.yaml") and "sms_deadline_hours" in problem.where and problem.line > 1
    )


def test_a_programs_quiet_hours_default_to_daytime_only_and_a_malformed_window_is_refused(
    db, catalog_copy: Path
):
    with transaction() as s:
        apply_catalog(s, load_catalog(DEMO_CATALOG))
    with new_session() as s:
        assert set(s.scalars(select(Program.quiet_hours))) == {"21:00-09:00"}
    programs = catalog_copy / "programs.yaml"
    programs.write_text(
        programs.read_text().replace(
            "sms_deadline_hours: 4", 'sms_deadline_hours: 4\n    quiet_hours: "22-08"'
        )
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_copy)
    (problem,) = caught.value.problems
    assert (
        problem.file.endswith("programs.yaml")
        and "quiet_hours" in problem.where
        and "HH:MM-HH:MM" in problem.message
    )


def test_yaml_syntax_error_names_the_line(catalog_copy: Path):
    (catalog_copy / "partners.yaml").write_text("partners:\n  - code: a\n    name: [unclosed\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(catalog_copy)
    assert caught.value.problems[0].file.endswith("partners.yaml")
    assert caught.value.problems[0].line >= 3


def test_a_broken_catalog_applied_from_the_cli_changes_nothing(demo_catalog, catalog_copy: Path, services):
    import subprocess
    import sys

    before_counts, before_rows = _counts(), _snapshot()
    (catalog_copy / "offers.yaml").write_text(
        (catalog_copy / "offers.yaml")
        .read_text()
        .replace("program: home-internet", "program: home-internett", 1)
    )
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "catalog", "apply", str(catalog_copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "offers.yaml:" in result.stderr and "home-internett" in result.stderr
    assert _counts() == before_counts and _snapshot() == before_rows


def test_a_failure_in_the_middle_of_apply_leaves_the_old_catalog(
    demo_catalog, catalog_copy: Path, monkeypatch
):
    offers = catalog_copy / "offers.yaml"
    offers.write_text(offers.read_text().replace("points: 1600", "points: 1700"))
    (catalog_copy / "partners.yaml").write_text(
        (catalog_copy / "partners.yaml").read_text().replace("name: Aray Cinema", "name: Aray Cinema Ltd")
    )
    before_counts, before_rows = _counts(), _snapshot()
    loaded = load_catalog(catalog_copy)
    with pytest.raises(RuntimeError):
        with transaction() as s:
            real_add = s.add

            def add(obj, *args, **kwargs):
                if isinstance(obj, OfferPrice) and obj.points == 1700:
                    raise RuntimeError("database went away")
                return real_add(obj, *args, **kwargs)

            monkeypatch.setattr(s, "add", add)
            apply_catalog(s, loaded)
    assert _counts() == before_counts and _snapshot() == before_rows
    with new_session() as s:
        assert s.scalar(select(Partner.name).where(Partner.code == "aray-cinema")) == "Aray Cinema"


def test_a_programs_sender_gets_the_ton_and_npi_of_its_form_unless_the_catalog_says(db, catalog_copy: Path):
    """An alphanumeric sender is TON 5; a numeric short code TON 3 (network specific), or what the
    catalog says (1, international); never 5 for a number."""
    programs = catalog_copy / "programs.yaml"
    original = programs.read_text()
    programs.write_text(
        original.replace("sms_sender: QazaqHome", 'sms_sender: "7575"').replace(
            "sms_sender: QazaqBiz", 'sms_sender: "77012345678"\n    sms_sender_ton: 1\n    sms_sender_npi: 1'
        )
    )
    with transaction() as s:
        apply_catalog(s, load_catalog(catalog_copy))
    with new_session() as s:
        rows = s.execute(
            select(Program.code, Program.sms_sender, Program.sms_sender_ton, Program.sms_sender_npi)
        )
        assert {r.code: tuple(r)[1:] for r in rows} == {
            "mobile-bonus": ("QazaqBonus", 5, 0),
            "home-internet": ("7575", 3, 0),
            "business": ("77012345678", 1, 1),
        }
    for sender, ton in (('"7575"', 5), ("QazaqHome", 3)):
        programs.write_text(
            original.replace("sms_sender: QazaqHome", f"sms_sender: {sender}\n    sms_sender_ton: {ton}")
        )
        with pytest.raises(CatalogError) as caught:
            load_catalog(catalog_copy)
        (problem,) = caught.value.problems
        assert problem.file.endswith("programs.yaml") and "sms_sender_ton" in problem.message
