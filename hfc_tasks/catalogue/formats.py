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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from hfc_tasks.product_names import QUICKLOOK, QUICKLOOK_SUFFIXES, ProductName, ProductNameError, check_plain_name

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
    embed_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (metadata table, its match key)

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
    embed_keys: tuple[tuple[str, tuple[str, ...]], ...] = (),
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
        kind=kind, table=table, columns=tuple(columns), match_key=match_key, links=links, embeds=embeds,
        embed_keys=embed_keys,
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


# ----------------------------------------------------------------------------- file kinds

# Shapes of product file names (formats.yaml `files`): per observation, per night, per code.
SCOPES = {
    "observation": ("{code}_{version}_{stamp}_{obs}_{kind}.csv", "{code}_{version}_{obs}_{stamp}_{kind}.csv"),
    "night": ("{code}_{version}_{date}_{obs}_{kind}.csv", "{code}_{version}_{obs}_{date}_{kind}.csv"),
    "code": ("{code}_{version}[_{obs}]_{kind}.csv",),
}
_FIELDS = {
    "code": r"(?P<code>[A-Za-z0-9]+)",
    "version": r"(?P<version>[A-Za-z0-9]+)",
    "obs": r"(?P<obs>[A-Za-z0-9]+)",
    "stamp": r"(?P<stamp>\d{8}(?:T\d{4,6})?)",
    "date": r"(?P<stamp>\d{8})",
}
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _template_regex(where: str, kind: str, template: str) -> re.Pattern:
    """``{code}_{version}[_{obs}]_{kind}.csv`` -> an anchored, case-insensitive regex."""
    out, seen, depth, i = [], set(), 0, 0
    while i < len(template):
        ch = template[i]
        if ch == "{":
            end = template.find("}", i)
            fname = template[i + 1:end] if end > 0 else ""
            if fname == "kind":
                out.append(re.escape(kind))
            elif fname in _FIELDS:
                group = "stamp" if fname == "date" else fname
                if group in seen:
                    raise FormatError(f"{where}: name template {template!r} uses {{{fname}}} twice")
                seen.add(group)
                out.append(_FIELDS[fname])
            else:
                raise FormatError(f"{where}: name template {template!r}: unknown field {{{fname}}} "
                                  f"(known: {', '.join('{' + f + '}' for f in (*_FIELDS, 'kind'))})")
            i = end + 1
            continue
        if ch == "[":
            depth += 1
            out.append("(?:")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise FormatError(f"{where}: name template {template!r}: ']' without '['")
            out.append(")?")
        else:
            out.append(re.escape(ch))
        i += 1
    if depth:
        raise FormatError(f"{where}: name template {template!r}: '[' without ']'")
    if "code" not in seen or not template.lower().endswith(".csv"):
        raise FormatError(f"{where}: name template {template!r} must hold {{code}} and end in .csv "
                          "(the code ties a file to its metadata; the readers read CSV)")
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


@dataclass(frozen=True)
class FileKind:
    """A kind of product file: the ``<kind>`` ending its name and the shape(s) of the rest."""

    kind: str
    scope: str  # observation | night | code | names (own templates)
    templates: tuple[str, ...]
    patterns: tuple[re.Pattern, ...]


def parse_file_kind(where: str, kind: str, body) -> FileKind:
    """One ``files`` entry: a scope name or a list of name templates."""
    if not _KIND_NAME.match(str(kind)) or kind == "quicklook":
        raise FormatError(f"{where}: file kind {kind!r} must match [a-z][a-z0-9_]* and not be 'quicklook'")
    if isinstance(body, str) and body in SCOPES:
        scope, templates = body, SCOPES[body]
    elif isinstance(body, list) and body and all(isinstance(t, str) for t in body):
        scope, templates = "names", tuple(body)
    else:
        raise FormatError(f"{where}: file kind {kind!r}: expected one of {', '.join(SCOPES)} or a list of "
                          f"name templates, got {body!r}")
    return FileKind(kind, scope, tuple(templates),
                    tuple(_template_regex(f"{where}: file kind {kind!r}", kind, t) for t in templates))


@dataclass(frozen=True)
class Formats:
    """The known kinds of files (``kinds``: spec name -> spec), the presets of file kind ->
    spec per product format (``formats``), the file kinds and their name shapes (``files``) and
    where each name was defined (``sources``: ``section.name`` -> file)."""

    kinds: dict[str, KindSpec]
    formats: dict[str, dict[str, str]]
    metadata_tables: dict[str, tuple[str, ...]]
    files: dict[str, FileKind] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def classify(self, name: str) -> ProductName:
        """Classify a product file by its name: a quicklook, or the declared file kind whose name
        shape it has (longer kind names first, so ``pp_info`` wins over an ``info`` kind)."""
        check_plain_name(name)
        if name.lower().endswith(QUICKLOOK_SUFFIXES):
            return ProductName(name=name, kind=QUICKLOOK)
        for kind in self._match_order:
            for pattern in kind.patterns:
                m = pattern.match(name)
                if m:
                    groups = m.groupdict()
                    return ProductName(name=name, kind=kind.kind, code=groups["code"].lower(),
                                       version=groups.get("version"), observatory_tag=groups.get("obs"),
                                       stamp=groups.get("stamp"))
        shapes: dict[tuple[str, ...], list[str]] = {}
        for k in self.files.values():
            shapes.setdefault(k.templates, []).append(k.kind)
        expected = "; ".join(f"{' or '.join(t)} with kind {', '.join(kinds)}" for t, kinds in shapes.items())
        raise ProductNameError(f"{name!r} is not an HFC product name (expected a .jpg/.png quicklook or {expected})")

    @cached_property
    def _match_order(self) -> list[FileKind]:
        # Sorted once per Formats, not per name: the archive and the loader classify every file.
        return sorted(self.files.values(), key=lambda k: (-len(k.kind), k.kind))

    def where(self, section: str, name: str) -> str:
        """The file that defined ``section.name`` (for error messages)."""
        return self.sources.get(f"{section}.{name}", "formats.yaml")

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
            if self.files and file_kind not in self.files:
                raise FormatError(f"{where}: file kind {file_kind!r} is not declared in any 'files' section "
                                  f"(declared: {', '.join(self.files)}): no file name would ever be classified as it")
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


_SECTIONS = ("files", "metadata_tables", "kinds", "formats")


def _read_document(path: Path) -> dict:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise FormatError(f"{path}: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FormatError(f"{path}: expected a mapping with some of the keys {', '.join(_SECTIONS)}")
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise FormatError(f"{path}: unknown key(s) {sorted(unknown)} (known: {', '.join(_SECTIONS)})")
    for section in _SECTIONS:
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise FormatError(f"{path}: '{section}' must be a mapping")
    return raw


def site_format_files(folder: str | os.PathLike) -> list[Path]:
    """The site formats files of a folder: ``*.yaml`` and ``*.yml``, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(f"site formats folder {folder} does not exist or is not a folder")
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_formats(path: str | os.PathLike | None = None, site_dir: str | os.PathLike | None = None) -> Formats:
    """Read and validate formats.yaml (the packaged presets unless ``path``), then the site
    formats files of ``site_dir`` merged over it: a site file adds names to any section, with the
    same schema and checks; redefining a name (a preset's or another site file's) is an error
    naming both files, so a site never silently changes what the presets load, and an upgrade of
    the presets never overwrites a site's formats."""
    base = Path(path or FORMATS_FILE)
    documents = [(base, _read_document(base))]
    if not {"kinds", "formats", "files"} <= set(documents[0][1]):
        raise FormatError(f"{base}: expected the keys 'files', 'kinds' and 'formats'")
    if site_dir is not None:
        documents += [(p, _read_document(p)) for p in site_format_files(site_dir)]
    merged: dict[str, dict] = {s: {} for s in _SECTIONS}
    sources: dict[str, str] = {}
    for doc_path, raw in documents:
        for section in _SECTIONS:
            for name, body in (raw.get(section) or {}).items():
                key = f"{section}.{name}"
                if key in sources:
                    raise FormatError(
                        f"{doc_path}: {key} is already defined in {sources[key]}; a site formats file adds "
                        "new names, it never redefines one (give yours another name)")
                sources[key] = str(doc_path)
                merged[section][name] = body
    where = lambda section, name: f"{sources[f'{section}.{name}']}: {section}.{name}"  # noqa: E731
    files = {str(k): parse_file_kind(where("files", k), str(k), v) for k, v in merged["files"].items()}
    meta = {}
    for table, key in merged["metadata_tables"].items():
        if not isinstance(key, list) or not key or not all(isinstance(c, str) for c in key):
            raise FormatError(f"{where('metadata_tables', table)}: expected a list of column names (the match key)")
        meta[table] = tuple(key)
    kinds = {}
    for name, body in merged["kinds"].items():
        at = where("kinds", name)
        if not isinstance(body, dict) or not isinstance(body.get("table"), str) or "columns" not in body:
            raise FormatError(f"{at}: needs 'table' and 'columns'")
        unknown = set(body) - {"table", "columns", "links", "embeds"}
        if unknown:
            raise FormatError(f"{at}: unknown key(s) {sorted(unknown)}")
        links = tuple(_parse_link(at, text) for text in body.get("links") or ())
        embeds = tuple((t, c) for t, c in (body.get("embeds") or {}).items())
        for table, _ in embeds:
            if table not in meta:
                raise FormatError(f"{at}: embeds {table!r}, which is not a metadata table")
        try:
            spec = parse_spec(
                name, body["table"], body["columns"], match_key=meta.get(body["table"], ()), links=links,
                embeds=embeds, embed_keys=tuple((t, meta[t]) for t, _ in embeds),
            )
        except FormatError as exc:
            # "spec X: column C: ..." -> "<file>: kinds.X: column C: ...": the key as the operator wrote it
            raise FormatError(f"{sources[f'kinds.{name}']}: kinds.{str(exc).removeprefix('spec ')}") from None
        for table, _ in embeds:
            missing = set(meta[table]) - {c.target for c in spec.embedded(table)}
            if missing:
                raise FormatError(f"{at}: embedded {table} lacks its match key column(s) {sorted(missing)}")
        for c in spec.columns:
            if c.embed and c.embed not in {t for t, _ in embeds}:
                raise FormatError(f"{at}: column {c.name} is in={c.embed} but the kind does not embed it")
        kinds[name] = spec
    formats = {}
    for fmt, mapping in merged["formats"].items():
        if not isinstance(mapping, dict):
            raise FormatError(f"{where('formats', fmt)}: must map file kinds to kinds")
        formats[fmt] = {str(k): str(v) for k, v in mapping.items()}
    result = Formats(kinds, formats, meta, files, sources)
    for fmt in formats:
        try:
            result.resolve(fmt)
        except FormatError as exc:
            raise FormatError(f"{sources[f'formats.{fmt}']}: {exc}") from None
    return result


# The packaged presets alone (a registry with a formats_dir has its own merged Formats).
KNOWN = load_formats()
