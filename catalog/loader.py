"""Reads catalog YAML (one file or a folder of them), validates everything, and reports each problem
with the file and line it comes from. Nothing is applied unless the whole catalog is valid."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from catalog.assets import Asset, read_logo
from catalog.model import CatalogSpec
from service.kit.values.money import to_minor

SECTIONS = ("vat_schedules", "partners", "products", "programs", "offers")
Loc = tuple[Any, ...]


@dataclass(frozen=True)
class CatalogProblem:
    file: str
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}: {self.message}"


class CatalogError(Exception):
    def __init__(self, problems: list[CatalogProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class LoadedCatalog:
    spec: CatalogSpec
    digest: str
    source: str
    assets: dict[str, Asset] = field(default_factory=dict)  # a logo as the catalog names it -> its file


def _where(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


class _Locations:
    def __init__(self) -> None:
        self.by_path: dict[Loc, tuple[str, int]] = {}

    def find(self, loc: Loc) -> tuple[str, int]:
        for n in range(len(loc), -1, -1):
            hit = self.by_path.get(tuple(loc[:n]))
            if hit:
                return hit
        return ("?", 0)

    def build(self, node: yaml.Node, path: Loc, file: str) -> Any:
        """Node -> Python, remembering the line of every mapping value and sequence item."""
        self.by_path.setdefault(path, (file, node.start_mark.line + 1))
        if isinstance(node, yaml.MappingNode):
            result = {}
            for key_node, value_node in node.value:
                key = yaml.safe_load(yaml.serialize(key_node))
                result[key] = self.build(value_node, (*path, key), file)
                self.by_path[(*path, key)] = (file, key_node.start_mark.line + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), file) for i, item in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    return [path]


def load_catalog(path: Path | str) -> LoadedCatalog:
    path = Path(path)
    if not path.exists():
        raise CatalogError([CatalogProblem(str(path), 0, "(file)", "no such file or folder")])
    locations = _Locations()
    merged: dict[str, list[Any]] = {s: [] for s in SECTIONS}
    problems: list[CatalogProblem] = []
    for file in _files(path):
        name = str(file)
        try:
            node = yaml.compose(file.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problems.append(CatalogProblem(name, (mark.line + 1) if mark else 0, "(yaml)", str(exc.problem)))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(CatalogProblem(name, 0, "(file)", str(exc)))
            continue
        if node is None:
            continue
        if not isinstance(node, yaml.MappingNode):
            problems.append(
                CatalogProblem(
                    name,
                    node.start_mark.line + 1,
                    "(top)",
                    f"expected a mapping with sections {', '.join(SECTIONS)}",
                )
            )
            continue
        for key_node, value_node in node.value:
            section = key_node.value
            if section not in SECTIONS:
                problems.append(
                    CatalogProblem(
                        name,
                        key_node.start_mark.line + 1,
                        str(section),
                        f"unknown section; expected one of {', '.join(SECTIONS)}",
                    )
                )
                continue
            if not isinstance(value_node, yaml.SequenceNode):
                problems.append(
                    CatalogProblem(name, value_node.start_mark.line + 1, section, "expected a list")
                )
                continue
            for item in value_node.value:
                index = len(merged[section])
                merged[section].append(locations.build(item, (section, index), name))
    if problems:
        raise CatalogError(problems)
    try:
        spec = CatalogSpec.model_validate(merged)
    except ValidationError as exc:
        raise CatalogError(
            [
                CatalogProblem(*locations.find(tuple(e["loc"])), _where(tuple(e["loc"])), e["msg"])
                for e in exc.errors(include_input=False, include_url=False)
            ]
        ) from None
    problems = [CatalogProblem(*locations.find(loc), _where(loc), msg) for loc, msg in cross_check(spec)]
    assets, asset_problems = _logos(spec, path if path.is_dir() else path.parent)
    problems += [CatalogProblem(*locations.find(loc), _where(loc), msg) for loc, msg in asset_problems]
    if problems:
        raise CatalogError(problems)
    content = {"spec": spec.model_dump(mode="json"), "assets": {k: a.id for k, a in assets.items()}}
    canonical = json.dumps(content if assets else content["spec"], sort_keys=True, ensure_ascii=False)
    return LoadedCatalog(spec, hashlib.sha256(canonical.encode()).hexdigest(), str(path), assets)


def _logos(spec: CatalogSpec, root: Path) -> tuple[dict[str, Asset], list[tuple[Loc, str]]]:
    """The logo files the partners and products name (paths relative to the catalog folder), read and
    checked: each problem at the line that names the file."""
    assets: dict[str, Asset] = {}
    errors: list[tuple[Loc, str]] = []
    for section in ("partners", "products"):
        for i, item in enumerate(getattr(spec, section)):
            if item.logo is None or item.logo in assets:
                continue
            try:
                assets[item.logo] = read_logo(root, item.logo)
            except (ValueError, OSError) as exc:
                errors.append(((section, i, "logo"), str(exc)))
    return assets, errors


def _duplicates(items: list[str]) -> list[int]:
    seen: set[str] = set()
    out = []
    for i, v in enumerate(items):
        if v in seen:
            out.append(i)
        seen.add(v)
    return out


def cross_check(spec: CatalogSpec) -> list[tuple[Loc, str]]:
    """References between sections, and rules that span them."""
    errors: list[tuple[Loc, str]] = []
    for section, key in (("partners", "code"), ("products", "sku"), ("programs", "code")):
        items = getattr(spec, section)
        for i in _duplicates([getattr(x, key) for x in items]):
            errors.append(((section, i, key), f"{getattr(items[i], key)!r} is defined twice"))
    for i in _duplicates([f"{o.program}/{o.code}" for o in spec.offers]):
        errors.append(
            (("offers", i, "code"), f"offer {spec.offers[i].code!r} is defined twice in its program")
        )

    for i in _duplicates([v.code for v in spec.vat_schedules]):
        errors.append((("vat_schedules", i, "code"), f"{spec.vat_schedules[i].code!r} is defined twice"))
    schedules = {v.code for v in spec.vat_schedules}
    partners = {p.code for p in spec.partners}
    products = {p.sku: p for p in spec.products}
    programs = {p.code: p for p in spec.programs}
    for i, product in enumerate(spec.products):
        if product.vat_schedule is not None and product.vat_schedule not in schedules:
            errors.append((("products", i, "vat_schedule"), f"unknown VAT schedule {product.vat_schedule!r}"))
        if product.partner is not None and product.partner not in partners:
            errors.append((("products", i, "partner"), f"unknown partner {product.partner!r}"))
        for j, sku in enumerate(product.exchange_catalog):
            target = products.get(sku)
            if target is None:
                errors.append((("products", i, "exchange_catalog", j), f"unknown product {sku!r}"))
            elif target.kind != "code":
                errors.append((("products", i, "exchange_catalog", j), f"{sku!r} is not a code product"))
            elif target.currency != product.currency:
                errors.append((("products", i, "exchange_catalog", j), f"{sku!r} is in another currency"))
    for i, offer in enumerate(spec.offers):
        program = programs.get(offer.program)
        offered = products.get(offer.product)
        if program is None:
            errors.append((("offers", i, "program"), f"unknown program {offer.program!r}"))
        if offered is None:
            errors.append((("offers", i, "product"), f"unknown product {offer.product!r}"))
        if program is None or offered is None:
            continue
        if offered.currency != program.currency:
            errors.append((("offers", i, "product"), "product and program currencies differ"))
            continue
        tariffs = {t.code for t in program.tariffs}
        seen: set[str] = set()
        for j, price in enumerate(offer.prices):
            for k, tariff in enumerate(price.tariffs):
                if tariff not in tariffs:
                    errors.append(
                        (
                            ("offers", i, "prices", j, "tariffs", k),
                            f"program {program.code!r} has no tariff {tariff!r}",
                        )
                    )
                elif tariff in seen:
                    errors.append(
                        (("offers", i, "prices", j, "tariffs", k), f"tariff {tariff!r} is priced twice")
                    )
                seen.add(tariff)
            try:
                nominal = to_minor(price.nominal, program.currency)
            except ValueError as exc:
                errors.append((("offers", i, "prices", j, "nominal"), str(exc)))
                continue
            if nominal <= 0:
                errors.append((("offers", i, "prices", j, "nominal"), "nominal must be positive"))
            elif (
                offered.kind == "code"
                and offered.face_value is not None
                and nominal != to_minor(offered.face_value, offered.currency)
            ):
                errors.append(
                    (
                        ("offers", i, "prices", j, "nominal"),
                        f"a code offer's nominal is its product's face value ({offered.face_value})",
                    )
                )
    return errors
