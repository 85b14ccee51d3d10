"""``hfc formats check``: what the loader would do with a folder of product files, without a database.

A dry run for whoever writes a site formats file or a new code: per file, the file kind and the
catalogue table it would go to, the header columns it carries that are not stored, the
catalogue columns it leaves empty, and every value the catalogue would refuse, grouped by column
(:mod:`~hfc_tasks.catalogue.grouping`). The verdict is the loader's because the files are read by
the loader's own exact reader (:func:`~hfc_tasks.catalogue.readers.read_product`) and paired with
the loader's :class:`~hfc_tasks.catalogue.state.Partners`; the reasons of the cross-file checks
are the loader's texts (:mod:`~hfc_tasks.catalogue.resolve`). What only the catalogue knows (ids
of files loaded on other nights, ``ref=@table`` ids, the tables' columns, unique indexes) is not
checked and is said so in :attr:`CheckResult.not_checked`.

Pure: no Airflow, no database connection; :func:`check_folder` returns a :class:`CheckResult`
that the CLI prints (text or JSON).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hfc_tasks import products as products_mod
from hfc_tasks.catalogue import readers
from hfc_tasks.catalogue.formats import FormatError, Formats, KindSpec
from hfc_tasks.catalogue.grouping import Group, group_problems
from hfc_tasks.catalogue.readers import Problem, ProductFileError, ProductTable
from hfc_tasks.catalogue.state import Partners
from hfc_tasks.manifest import Entry

LOADS, REFUSED, NOT_LOADED, NOT_PRODUCT, QUICKLOOK = "loads", "refused", "not loaded", "not a product", "quicklook"


class CheckError(ValueError):
    """The check cannot run (no such folder, no product format to check against): a usage error."""


@dataclass
class FileCheck:
    """What the loader would do with one file."""

    name: str
    kind: str | None = None  # file kind, "quicklook", or None: no declared kind takes the name
    spec: str | None = None  # the kind of formats.yaml (or a site formats file) it is read with
    table: str | None = None  # catalogue table its rows go to
    rows: int | None = None  # data rows (None: unreadable)
    not_stored: list[str] = field(default_factory=list)  # header columns unknown to the kind, or `extra`
    empty: list[str] = field(default_factory=list)  # catalogue columns the file leaves empty
    problems: list[Problem] = field(default_factory=list)  # what the loader would reject it for
    warnings: list[str] = field(default_factory=list)
    note: str | None = None  # why it is not loaded (not a product name, a kind the format does not load)

    @property
    def verdict(self) -> str:
        if self.kind is None:
            return NOT_PRODUCT
        if self.kind == products_mod.QUICKLOOK:
            return QUICKLOOK
        if self.spec is None:
            return NOT_LOADED
        return REFUSED if self.problems else LOADS

    @property
    def loads(self) -> bool:
        """True when the file goes where it should: its rows load, or it is a quicklook (archived,
        its place fills the observations' QCLK_URL)."""
        return self.verdict in (LOADS, QUICKLOOK)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "spec": self.spec, "table": self.table, "rows": self.rows,
            "verdict": self.verdict, "not_stored": self.not_stored, "empty": self.empty, "note": self.note,
            "warnings": self.warnings,
            "problems": [{"line": p.line, "column": p.column, "reason": p.reason} for p in self.problems],
        }


@dataclass
class CheckResult:
    folder: str
    product_format: str
    frc: str | None
    products: dict[str, str]
    formats_files: list[str]  # the formats files read: the packaged presets, then the site's
    load_order: list[tuple[str, str, str]]  # (file kind, kind, table) in load order
    files: list[FileCheck]
    expected_names: str  # the name shapes of the declared file kinds
    not_checked: list[str]  # checks that need the catalogue database

    @property
    def ok(self) -> bool:
        return all(f.loads for f in self.files)

    @property
    def groups(self) -> list[Group]:
        return group_problems([p for f in self.files for p in f.problems])

    def to_dict(self) -> dict:
        return {
            "folder": self.folder, "frc": self.frc, "product_format": self.product_format,
            "products": self.products, "formats_files": self.formats_files,
            "load_order": [{"file_kind": k, "kind": s, "table": t} for k, s, t in self.load_order],
            "ok": self.ok, "files": [f.to_dict() for f in self.files],
            "refused": [g.to_dict() for g in self.groups], "expected_names": self.expected_names,
            "not_checked": self.not_checked,
        }

    def text(self) -> str:
        """The operator's report: a line per file, then the refused values grouped, what was not
        checked, and the verdict."""
        who = f"FRC {self.frc}, " if self.frc else ""
        out = [f"{self.folder}: {who}product format {self.product_format}"
               + (f" with products {self.products}" if self.products else ""),
               f"formats: {' + '.join(self.formats_files)}",
               "load order: " + ", ".join(f"{k}->{t}" for k, _, t in self.load_order)]
        width = max((len(f.name) for f in self.files), default=0)
        for f in self.files:
            if f.verdict == NOT_PRODUCT:
                out.append(f"  {f.name:<{width}}  not an HFC product name")
                continue
            if f.verdict == QUICKLOOK:
                out.append(f"  {f.name:<{width}}  quicklook (archived; its place fills QCLK_URL)")
                continue
            if f.verdict == NOT_LOADED:
                out.append(f"  {f.name:<{width}}  {f.kind}: {f.note}")
                continue
            rows = "unreadable" if f.rows is None else f"{f.rows} row{'' if f.rows == 1 else 's'}"
            verdict = "REFUSED" if f.problems else "loads"
            out.append(f"  {f.name:<{width}}  {f.kind} ({f.spec}) -> {f.table}, {rows}: {verdict}")
            if f.not_stored:
                out.append(f"      not stored: {', '.join(f.not_stored)}")
            if f.empty:
                out.append(f"      left empty: {', '.join(f.empty)}")
            out.extend(f"      warning: {w}" for w in f.warnings)
        if any(f.verdict == NOT_PRODUCT for f in self.files):
            out.append(f"expected names: {self.expected_names}")
        groups = self.groups
        if groups:
            out.append("refused (the loader would reject these files):")
            out.extend(f"  {g}" for g in groups)
        if self.not_checked:
            out.append("not checked (needs the catalogue database):")
            out.extend(f"  {n}" for n in self.not_checked)
        bad = [f for f in self.files if not f.loads]
        out.append(f"verdict: every file would load ({len(self.files)})" if not bad else
                   f"verdict: {len(bad)} of {len(self.files)} file(s) would not load: "
                   + ", ".join(f.name for f in bad))
        return "\n".join(out)


# ---------------------------------------------------------------------------------- choosing

def choose_format(known: Formats, frcs: list, names: list[str], *, frc: str | None = None,
                  product_format: str | None = None) -> tuple[str, dict[str, str], str | None]:
    """(product format, products, FRC name) to check against: ``frc``'s (its product_format and
    products; ``product_format`` overrides the format, its products then apply only if the
    format is the FRC's), else ``product_format``, else the registry FRC named like the code of
    the files. ``frcs``: the registry's FRCs."""
    if frc is not None:
        found = next((f for f in frcs if f.name == frc), None)
        if found is None:
            raise CheckError(f"FRC {frc!r} is not in the registry (known: {', '.join(f.name for f in frcs)})")
        fmt = product_format or found.product_format
        return fmt, dict(found.products) if fmt == found.product_format else {}, found.name
    if product_format is not None:
        return product_format, {}, None
    codes = set()
    for name in names:
        try:
            code = known.classify(name).code
        except products_mod.ProductNameError:
            continue
        if code:
            codes.add(code)
    # The FRC named like the code, else the one archiving under that name (a tracker shares its
    # detector's archive folder, so the name decides first).
    matching = [f for f in frcs if f.name in codes] or [f for f in frcs if f.archive_dir in codes]
    if len(codes) == 1 and len(matching) == 1:
        return matching[0].product_format, dict(matching[0].products), matching[0].name
    why = (f"the files are of code(s) {sorted(codes)}, which name {len(matching)} registry FRC(s)"
           + (f" ({', '.join(f.name for f in matching)})" if matching else "")) if codes else "no file has a code"
    raise CheckError(f"which FRC's formats to check against? {why}: pass --frc F (or --product-format P)")


def expected_names(known: Formats) -> str:
    """The name shapes of the declared file kinds, for files no kind takes."""
    shapes: dict[tuple[str, ...], list[str]] = {}
    for k in known.files.values():
        shapes.setdefault(k.templates, []).append(k.kind)
    return "a .jpg/.png quicklook, or " + "; ".join(
        f"{' or '.join(t)} with kind {', '.join(kinds)}" for t, kinds in shapes.items())


# ---------------------------------------------------------------------------------- checking

def check_folder(folder: str | os.PathLike, known: Formats, product_format: str,
                 products: dict[str, str] | None = None, *, frc: str | None = None) -> CheckResult:
    """Check every file of ``folder`` (not its subfolders) as the loader would load them for
    ``product_format`` (with ``products`` overrides) under the formats ``known``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckError(f"{folder} does not exist or is not a folder")
    try:
        specs = known.resolve(product_format, products or None)
    except FormatError as exc:
        raise CheckError(str(exc)) from None
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    checks = {p.name: FileCheck(p.name) for p in paths}
    entries: list[Entry] = []
    for p in paths:
        f = checks[p.name]
        try:
            product = known.classify(p.name)
        except products_mod.ProductNameError as exc:
            f.note = str(exc)
            continue
        f.kind = product.kind
        if product.kind == products_mod.QUICKLOOK:
            continue
        if product.kind not in specs:
            f.note = f"kind {product.kind!r} is not loaded for product format {product_format!r}"
            continue
        f.spec, f.table = specs[product.kind].kind, specs[product.kind].table
        entries.append(Entry(name=p.name, kind=product.kind, sha256="", archive_path=p.name, size=None,
                             url_base=None, product=product))
    read: dict[str, ProductTable] = {}
    not_checked: list[str] = []
    # Kinds in load order: a file whose companion file is refused is refused with it, as in the loader.
    for kind, spec in specs.items():
        for e in (e for e in entries if e.kind == kind):
            f = checks[e.name]
            table = _read(f, folder / e.name, spec)
            if table is not None:
                read[e.name] = table
                f.problems.extend(_references(f, table, spec, entries, read, checks, not_checked))
                if f.problems:
                    del read[e.name]
    if any(s.embeds or s.is_metadata for s in specs.values()):
        not_checked.append("metadata rows (" + ", ".join(sorted(
            {s.table for s in specs.values() if s.is_metadata} | {t for s in specs.values() for t, _ in s.embeds}))
            + ") are matched by content in the catalogue, or inserted")
    tables = sorted({s.table for s in specs.values()})
    not_checked.append(f"that the catalogue tables ({', '.join(tables)}) have the columns the kinds store, "
                       "and what their unique indexes refuse")
    return CheckResult(
        folder=str(folder), product_format=product_format, frc=frc, products=dict(products or {}),
        formats_files=list(dict.fromkeys(known.sources.values())) or ["formats.yaml"],
        load_order=[(k, s.kind, s.table) for k, s in specs.items()], files=list(checks.values()),
        expected_names=expected_names(known), not_checked=not_checked,
    )


def _read(f: FileCheck, path: Path, spec: KindSpec) -> ProductTable | None:
    """Read with the loader's exact reader; fill in the header's columns not stored and the
    catalogue columns left empty (from the raw cells, so also for a refused file)."""
    data = path.read_bytes()
    try:
        header, cells = readers.split_cells(f.name, data)
    except ProductFileError as exc:  # empty, bad quoting: nothing to say about the columns
        f.problems.extend(exc.problems)
        return None
    head = readers.analyse_header(f.name, header, spec)
    extra = [c for c in spec.columns if c.target is None]
    f.not_stored = [n for n in head.names if n and (n in head.unknown or any(n in c.headers for c in extra))]
    f.rows = len(cells)
    if f.rows:
        for col in spec.read_columns:
            if col.fill_file or col.default is not None:
                continue  # never empty once filled
            pos = head.position.get(col.name)
            if pos is None or cells[pos].isin(readers.NULL_TOKENS).all():
                name = f"{col.embed}.{col.target}" if col.embed else col.target
                if spec.table == "observations" and col.target == "qclk_url":  # as resolve.py does
                    name += " (the loader fills it for rows whose QCLK_FNAME is an archived quicklook)"
                f.empty.append(name)
    try:
        table = readers.read_product(f.name, data, spec)
    except ProductFileError as exc:
        f.problems.extend(exc.problems)
        return None
    f.warnings = [w for w in table.warnings if not w.startswith(f"{f.name}: unknown column(s) ignored")]
    return table


def _references(f: FileCheck, table: ProductTable, spec: KindSpec, entries: list[Entry],
                read: dict[str, ProductTable], checks: dict[str, FileCheck], not_checked: list[str]) -> list[Problem]:
    """The loader's cross-file checks (resolve.py) that need no database, with its reasons."""
    problems: list[Problem] = []
    me = next(e for e in entries if e.name == f.name)
    lines = table.lines

    def problem(line, column, reason) -> None:
        if len(problems) < readers.MAX_PROBLEMS:
            problems.append(Problem(f.name, None if line is None else int(line), column, reason))

    def partner(kind: str, column: str) -> ProductTable | None:
        p = Partners([e for e in entries if e.kind == kind]).of(me)
        if p is None:
            problem(None, column, f"no {kind} file for it in the manifest")
            return None
        if p.name not in read:
            problem(None, column, f"its {kind} file {p.name} was rejected")
            return None
        return read[p.name]

    for col in spec.columns:
        if col.target is None or col.embed:
            continue
        values = (table.frame[col.target].to_numpy(dtype=float, na_value=np.nan)
                  if col.ref or col.ref_by or col.ref_table else None)
        if col.ref and not col.ref_by:
            other = partner(col.ref, col.name)
            if other is None:
                continue
            bad = ~np.isnan(values) & ~np.isin(values, other.local_ids)
            for r in np.flatnonzero(bad):
                problem(lines[r], col.name, f"id {int(values[r])} is not an id of {other.file}")
        elif col.ref_by:
            by_col = next(c for c in spec.columns if c.name == col.ref_by)
            names = table.frame[by_col.target].tolist()
            outside = sorted({n for n in names if isinstance(n, str) and n not in checks})
            ids = {n: set(read[n].local_ids.tolist()) for n in set(names) if isinstance(n, str) and n in read}
            for r, name in enumerate(names):
                if not isinstance(name, str) or name not in checks or np.isnan(values[r]):
                    continue
                if name not in read:
                    why = "was rejected" if checks[name].problems else "is not loaded"
                    problem(lines[r], by_col.name, f"{col.ref} file {name} {why}")
                elif values[r] not in ids[name]:
                    problem(lines[r], col.name, f"id {int(values[r])} of {name} is not in this manifest")
            if outside:
                not_checked.append(f"{f.name}: {col.name} ids of {len(outside)} {col.ref} file(s) not in this "
                                   f"folder (e.g. {outside[0]}) are looked up in the catalogue")
        elif col.ref_table:
            if not np.isnan(values).all():
                not_checked.append(f"{f.name}: {col.name} holds ids of hfc.{col.ref_table}, looked up in the catalogue")
    for link in spec.links:
        other = partner(link.kind, link.target)
        if other is None:
            continue
        if link.by is None:
            if len(other) != 1:
                problem(None, None, f"{link.target}: its {link.kind} file {other.file} has {len(other)} rows, "
                        "exactly one is needed")
            continue
        mine, theirs = link.by
        col = next((c for c in other.spec.columns if theirs in c.headers), None)
        keys = set() if col is None else {str(v) for v in other.frame[col.target].tolist() if v is not None}
        for r, key in enumerate(table.frame[f"@{mine}"].tolist()):
            if key not in keys:
                problem(lines[r], mine, f"{key!r} is not the {theirs} of any row of {other.file}")
    return problems
