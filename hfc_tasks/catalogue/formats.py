"""The formats model: what each kind of HFC product file holds and where its rows go.

``formats.yaml`` (next to this module) describes every known kind of file (its columns, with
types, flags and catalogue targets, see :func:`parse_spec`) and, per product format, which kind
of file goes to which table. :func:`load_formats` reads and validates it; :data:`KNOWN` is the
shipped file. Supporting another FRC format means adding specs there, not code.

The one reader of ``formats.yaml``: the readers and the loader (which read the files) and the
registry (which checks an FRC's ``product_format`` and ``products``) all use this module. It
imports no pandas/numpy, so the registry, and through it the DAG file, stays light.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

TYPES = ("int", "float", "text", "datetime")
# libyaml's C parser when present: the registry, hence the DAG file at every parse, reads formats.yaml.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FORMATS_FILE = Path(__file__).with_name("formats.yaml")


class FormatError(ValueError):
    """``formats.yaml`` (or a registry's ``products`` mapping) is invalid; names the place."""


@dataclass(frozen=True)
class Column:
    """One column a kind of file may carry.

    ``target`` is the catalogue column (lower-case), None for a known column the catalogue does
    not store (read, not validated, dropped). A nullable column may be absent from the header
    (older files lack some): it is then all NULL. ``embed``: the column belongs to the metadata
    row of that table carried inside each data row (SoSoFT); ``target`` is then its column there.
    """

    name: str
    type: str
    nullable: bool = True
    max_len: int | None = None
    target: str | None = None
    aliases: tuple[str, ...] = ()
    ref: str | None = None  # file kind whose local ids this column holds
    ref_by: str | None = None  # ...of the file of that kind named in this header column (tracking)
    ref_table: str | None = None  # holds catalogue ids of this table
    local_id: bool = False  # the file-local row id (unique in the file)
    embed: str | None = None
    default: str | None = None  # NULL -> this value
    fill_file: bool = False  # NULL or absent -> the file's own name

    @property
    def required(self) -> bool:
        return not self.nullable or self.local_id

    @property
    def stored(self) -> bool:
        return self.target is not None and self.embed is None

    @property
    def headers(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Link:
    """A foreign key the file does not carry as a local id: ``target`` takes the catalogue id of
    the companion ``kind`` file's only row (``by`` None) or of its row whose ``by[1]`` column
    equals this row's ``by[0]`` column (header names)."""

    target: str
    kind: str
    by: tuple[str, str] | None = None


@dataclass(frozen=True)
class KindSpec:
    """How to read one kind of file and where its rows go.

    ``table``: catalogue table. ``match_key``: for shared metadata tables (observatory,
    frc_info, pp_info), the target columns that identify a row by content: such rows are matched
    or inserted, never owned by a batch. Tables without a match key are owned by the batch.
    """

    kind: str
    table: str
    columns: tuple[Column, ...]
    match_key: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    embeds: tuple[tuple[str, str], ...] = ()  # (metadata table, target column here)

    @property
    def local_id(self) -> Column | None:
        return next((c for c in self.columns if c.local_id), None)

    @property
    def stored_columns(self) -> list[Column]:
        return [c for c in self.columns if c.stored]

    @property
    def read_columns(self) -> list[Column]:
        """Columns converted and validated: stored ones and embedded metadata ones."""
        return [c for c in self.columns if c.target is not None]

    def embedded(self, table: str) -> list[Column]:
        return [c for c in self.columns if c.embed == table]

    @property
    def depends_on(self) -> set[str]:
        """File kinds this kind's rows point into (they must be loaded first)."""
        return {c.ref for c in self.columns if c.ref and c.target} | {link.kind for link in self.links}

    @property
    def is_metadata(self) -> bool:
        return bool(self.match_key)

    @property
    def is_tracking(self) -> bool:
        """Tracking files: rows point into files named in the row or into catalogue rows."""
        return any(c.ref_by or c.ref_table for c in self.columns)


def parse_spec(
    kind: str,
    table: str,
    text: str,
    *,
    match_key: tuple[str, ...] = (),
    links: tuple[Link, ...] = (),
    embeds: tuple[tuple[str, str], ...] = (),
) -> KindSpec:
    """Build a :class:`KindSpec` from a text table, one column a line::

        NAME  TYPE  [flags...]

    TYPE is ``int``, ``float``, ``datetime``, ``text`` or ``text(N)`` (N = max length).
    Flags (see formats.yaml): ``notnull``; ``id``; ``ref=<kind>``, ``ref=<kind>@<COLUMN>``,
    ``ref=@<table>``; ``in=<table>``; ``extra``; ``to=<column>``; ``alias=<NAME>``
    (repeatable); ``default=<value>``; ``fill=file``. ``#`` starts a comment.
    """
    columns = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, typ, *flags = line.split()
        max_len = None
        m = re.fullmatch(r"text\((\d+)\)", typ)
        if m:
            typ, max_len = "text", int(m.group(1))
        if typ not in TYPES:
            raise FormatError(f"spec {kind}: column {name}: unknown type {typ!r}")
        opts: dict = {"nullable": True, "target": name.lower(), "aliases": []}
        for flag in flags:
            key, _, value = flag.partition("=")
            if key == "notnull":
                opts["nullable"] = False
            elif key == "id":
                opts["local_id"], opts["nullable"] = True, False
            elif key == "ref" and value.startswith("@"):
                opts["ref_table"] = value[1:]
            elif key == "ref":
                ref, _, by = value.partition("@")
                opts["ref"], opts["ref_by"] = ref, (by.upper() or None)
            elif key == "in":
                opts["embed"] = value
            elif key == "extra":
                opts["target"] = None
            elif key == "to":
                opts["target"] = value
            elif key == "alias":
                opts["aliases"].append(value.upper())
            elif key == "default":
                opts["default"] = value
            elif key == "fill" and value == "file":
                opts["fill_file"] = True
            else:
                raise FormatError(f"spec {kind}: column {name}: unknown flag {flag!r}")
        if opts.get("default") is not None or opts.get("fill_file"):
            opts["nullable"] = True  # the value is never NULL once filled
        opts["aliases"] = tuple(opts["aliases"])
        columns.append(Column(name=name.upper(), type=typ, max_len=max_len, **opts))
    targets = [c.target for c in columns if c.target]
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise FormatError(f"spec {kind}: several columns go to {dupes}")
    return KindSpec(
        kind=kind, table=table, columns=tuple(columns), match_key=match_key, links=links, embeds=embeds
    )


_LINK = re.compile(
    r"^(?P<target>[a-z0-9_]+)\s*<-\s*(?P<kind>[a-z0-9_]+)\s+(?:(?P<only>only)|by\s+(?P<by>[A-Z0-9_=]+))$"
)


def _parse_link(where: str, text: str) -> Link:
    m = _LINK.match(str(text).strip())
    if not m:
        raise FormatError(f"{where}: link {text!r} is not 'TARGET <- KIND only' or 'TARGET <- KIND by COL[=COL2]'")
    by = None
    if m.group("by"):
        mine, _, theirs = m.group("by").partition("=")
        by = (mine, theirs or mine)
    return Link(m.group("target"), m.group("kind"), by)


@dataclass(frozen=True)
class Formats:
    """The known kinds of files (``kinds``: spec name -> spec) and the presets of file kind ->
    spec per product format (``formats``)."""

    kinds: dict[str, KindSpec]
    formats: dict[str, dict[str, str]]
    metadata_tables: dict[str, tuple[str, ...]]

    def resolve(self, product_format: str, products: dict[str, str] | None = None) -> dict[str, KindSpec]:
        """file kind -> spec for one FRC, in load order (every kind after those it points into).

        ``products`` (the registry's per-FRC override) maps file kinds to spec names and wins
        over the preset; a spec name ``none`` drops a kind.
        """
        if product_format not in self.formats:
            raise FormatError(f"unknown product format {product_format!r} (known: {', '.join(self.formats)})")
        mapping = {**self.formats[product_format], **(products or {})}
        mapping = {k: v for k, v in mapping.items() if v != "none"}
        where = f"product format {product_format!r}" + (f" with products {products}" if products else "")
        specs = {}
        for file_kind, spec_name in mapping.items():
            if spec_name not in self.kinds:
                raise FormatError(f"{where}: kind {file_kind!r} maps to unknown spec {spec_name!r}")
            specs[file_kind] = self.kinds[spec_name]
        for file_kind, spec in specs.items():
            for dep in spec.depends_on:
                if dep not in specs:
                    raise FormatError(f"{where}: {file_kind} files ({spec.kind}) point into {dep!r} files, "
                                      "which this format does not load")
        ordered: dict[str, KindSpec] = {}
        pending = dict(specs)
        while pending:
            ready = [k for k, s in pending.items() if s.depends_on - {k} <= set(ordered)]
            if not ready:
                raise FormatError(f"{where}: circular references between {sorted(pending)}")
            for k in ready:
                ordered[k] = pending.pop(k)
        return ordered


def load_formats(path: str | os.PathLike | None = None) -> Formats:
    """Read and validate formats.yaml; errors name the file and the key."""
    path = Path(path or FORMATS_FILE)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise FormatError(f"{path}: {exc}") from None
    if not isinstance(raw, dict) or not {"kinds", "formats"} <= set(raw):
        raise FormatError(f"{path}: expected the keys 'kinds' and 'formats'")
    meta = {t: tuple(k) for t, k in (raw.get("metadata_tables") or {}).items()}
    kinds = {}
    for name, body in raw["kinds"].items():
        where = f"{path}: kinds.{name}"
        if not isinstance(body, dict) or not isinstance(body.get("table"), str) or "columns" not in body:
            raise FormatError(f"{where}: needs 'table' and 'columns'")
        unknown = set(body) - {"table", "columns", "links", "embeds"}
        if unknown:
            raise FormatError(f"{where}: unknown key(s) {sorted(unknown)}")
        links = tuple(_parse_link(where, text) for text in body.get("links") or ())
        embeds = tuple((t, c) for t, c in (body.get("embeds") or {}).items())
        for table, _ in embeds:
            if table not in meta:
                raise FormatError(f"{where}: embeds {table!r}, which is not a metadata table")
        try:
            spec = parse_spec(
                name, body["table"], body["columns"], match_key=meta.get(body["table"], ()), links=links, embeds=embeds
            )
        except FormatError as exc:
            raise FormatError(f"{path}: {exc}") from None
        for table, _ in embeds:
            missing = set(meta[table]) - {c.target for c in spec.embedded(table)}
            if missing:
                raise FormatError(f"{where}: embedded {table} lacks its match key column(s) {sorted(missing)}")
        for c in spec.columns:
            if c.embed and c.embed not in {t for t, _ in embeds}:
                raise FormatError(f"{where}: column {c.name} is in={c.embed} but the kind does not embed it")
        kinds[name] = spec
    formats = {}
    for fmt, mapping in raw["formats"].items():
        if not isinstance(mapping, dict):
            raise FormatError(f"{path}: formats.{fmt} must map file kinds to kinds")
        formats[fmt] = {str(k): str(v) for k, v in mapping.items()}
    result = Formats(kinds, formats, meta)
    for fmt in formats:
        try:
            result.resolve(fmt)
        except FormatError as exc:
            raise FormatError(f"{path}: {exc}") from None
    return result


KNOWN = load_formats()
