"""Load one night of one FRC into the catalogue: the pure logic of the ``catalogue`` task.

``load_night`` reads every file the archive stage's manifest lists (through a callable, so the
Airflow layer can read over SFTP and the CLI/tests from disk), verifies its sha256, parses it,
and then, in ONE transaction: upgrades the schema, matches shared metadata (observatory,
frc_info) by content, replaces the batch (frc, night) (the old batch's rows go by ON DELETE
CASCADE) and bulk-loads the new rows with COPY, remapping file-local ids to catalogue ids.

A bad file is rejected (recorded in ``hfc.rejected_file``, listed in the report) and skipped
together with the files that depend on it; the good files still load. Anything that goes wrong
in the database rolls the whole transaction back, so the previous good batch stays.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hfc_tasks import products
from hfc_tasks.catalogue import readers
from hfc_tasks.catalogue.readers import Problem, ProductFileError, ProductTable
from hfc_tasks.catalogue.schema import upgrade

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "hfc-manifest/1"
COPY_CHUNK_ROWS = 50_000  # rows formatted per COPY write: bounds memory on big nights
# Files that cannot be read for a reason of their own are rejected; any other error while
# reading (connection lost...) aborts the load before the database is touched.
_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class ManifestError(ValueError):
    """The manifest itself is unusable (not a per-file problem): nothing is loaded."""


@dataclass(frozen=True)
class RejectedFile:
    file: str
    line: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        return str(Problem(self.file, self.line, self.column, self.reason))


@dataclass
class LoadReport:
    frc: str
    night: dt.date
    batch_id: int
    rows: dict[str, int]  # catalogue rows loaded, per batch-owned table
    files_loaded: list[str]
    rejected: list[RejectedFile]  # one entry per problem; several may name the same file
    warnings: list[str]  # unknown columns, unsupported kinds, Latin-1 files...
    metadata_new: dict[str, int] = field(default_factory=dict)  # shared rows inserted, per table
    migrations: list[str] = field(default_factory=list)  # schema versions applied by this load
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def rejected_files(self) -> list[str]:
        return list(dict.fromkeys(r.file for r in self.rejected))

    def summary(self) -> str:
        rows = ", ".join(f"{k}={v}" for k, v in self.rows.items()) or "no rows"
        text = (
            f"batch {self.batch_id} ({self.frc} {self.night}): {rows}; "
            f"{len(self.files_loaded)} file(s) loaded in {self.seconds:.2f}s"
        )
        if self.rejected:
            text += f"; {len(self.rejected_files)} file(s) REJECTED:\n  " + "\n  ".join(str(r) for r in self.rejected)
        return text


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str
    sha256: str
    archive_path: str
    size: int | None
    url_base: str | None
    product: products.ProductName | None


# ---------------------------------------------------------------------------------- manifest


def _parse_manifest(manifest: dict) -> tuple[str, dt.date, str, list[_Entry]]:
    if not isinstance(manifest, dict):
        raise ManifestError("manifest is not a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    for key in ("frc", "night", "product_format"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise ManifestError(f"manifest has no {key!r}")
    try:
        night = products.parse_night(manifest["night"])
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    fmt = manifest["product_format"]
    if fmt not in readers.FORMATS:
        raise ManifestError(f"no reader for product format {fmt!r} (known: {', '.join(readers.FORMATS)})")
    files = manifest.get("files", [])
    if not isinstance(files, list):
        raise ManifestError("manifest 'files' is not a list")
    entries, seen = [], set()
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise ManifestError(f"manifest file #{i} is not an object")
        missing = [k for k in ("name", "kind", "sha256", "archive_path") if not f.get(k)]
        if missing:
            raise ManifestError(f"manifest file #{i} ({f.get('name')!r}) lacks {', '.join(missing)}")
        name = f["name"]
        try:
            products.check_plain_name(name)
        except products.ProductNameError as exc:
            raise ManifestError(str(exc)) from None
        if name in seen:
            raise ManifestError(f"manifest lists {name!r} twice")
        seen.add(name)
        product = None
        if f["kind"] != products.QUICKLOOK:
            try:
                product = products.parse_product_name(name)
            except products.ProductNameError:
                product = None  # rejected later, with the reason, like any bad file
        entries.append(
            _Entry(
                name=name,
                kind=f["kind"],
                sha256=str(f["sha256"]).lower(),
                archive_path=f["archive_path"],
                size=f.get("size"),
                url_base=f.get("url_base"),
                product=product,
            )
        )
    entries.sort(key=lambda e: e.name)  # deterministic load order and ids
    return manifest["frc"], night, fmt, entries


def _partner(entry: _Entry, kind: str, candidates: list[_Entry]) -> _Entry | None:
    """The file of ``kind`` whose local ids ``entry``'s reference columns hold.

    Data files (init/feat/...) pair by their shared ``<code>_<ver>_<stamp>_<obs>`` stem;
    metadata files by code and version, preferring the same observatory tag, then an untagged
    file, then the only file of that kind in the manifest.
    """
    me = entry.product
    if me is None:
        return None
    if kind in readers.METADATA_KINDS:
        same = [c for c in candidates if c.product and (c.product.code, c.product.version) == (me.code, me.version)]
        for pick in (
            [c for c in same if c.product.observatory_tag == me.observatory_tag],
            [c for c in same if c.product.observatory_tag is None],
            same if len(same) == 1 else [],
            candidates if len(candidates) == 1 else [],
        ):
            if len(pick) == 1:
                return pick[0]
        return None
    key = (me.code, me.version, me.stamp, me.observatory_tag)
    for c in candidates:
        if c.product and (c.product.code, c.product.version, c.product.stamp, c.product.observatory_tag) == key:
            return c
    return None


# ---------------------------------------------------------------------------------- load


def load_night(
    conn,
    manifest: dict,
    read_file: Callable[[str], bytes],
    *,
    dag_run_id: str | None = None,
    task_try: int | None = None,
    manifest_sha256: str | None = None,
) -> LoadReport:
    """Replace the catalogue batch (frc, night) with the files of ``manifest``.

    ``conn``: an open psycopg 3 connection (autocommit off). The load runs in ``with
    conn.transaction()``: committed at the end when no transaction was open, else a savepoint
    in the caller's transaction. ``read_file(archive_path) -> bytes``.
    ``manifest_sha256``: the sha256 of the manifest file as stored on the archive (so a batch
    names the exact file it came from); without it, the hash of the manifest as canonical JSON.
    """
    t0 = time.monotonic()
    frc, night, fmt, entries = _parse_manifest(manifest)
    specs = readers.FORMATS[fmt]
    manifest_sha = (
        manifest_sha256
        or hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    )

    rejected: dict[str, list[Problem]] = {}
    warnings: list[str] = []
    tables: dict[str, ProductTable] = {}

    def reject(name: str, problems: list[Problem]) -> None:
        rejected.setdefault(name, []).extend(problems)
        tables.pop(name, None)

    # 1. Read, verify and parse, outside the transaction (no locks held while reading SFTP).
    for e in entries:
        if e.kind == products.QUICKLOOK:
            continue
        if e.kind not in specs:
            warnings.append(f"{e.name}: kind {e.kind!r} is not loaded for product format {fmt!r}")
            continue
        if e.product is None:
            reject(e.name, [Problem(e.name, None, None, "not an HFC product file name")])
            continue
        try:
            data = read_file(e.archive_path)
        except _FILE_ERRORS as exc:
            reject(e.name, [Problem(e.name, None, None, f"cannot read {e.archive_path}: {exc}")])
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != e.sha256:
            reject(e.name, [Problem(e.name, None, None, f"sha256 mismatch: manifest {e.sha256}, file {digest}")])
            continue
        try:
            table = readers.read_product(e.name, data, specs[e.kind])
        except ProductFileError as exc:
            reject(e.name, exc.problems)
            continue
        tables[e.name] = table
        warnings.extend(table.warnings)

    # 2. Cross-file checks (pure): every reference column must point at a row of its
    #    companion file; a file whose companion is missing or rejected is rejected too.
    by_kind: dict[str, list[_Entry]] = {k: [] for k in specs}
    for e in entries:
        if e.kind in by_kind:
            by_kind[e.kind].append(e)
    partners: dict[tuple[str, str], str] = {}  # (file, ref column) -> companion file
    for kind, spec in specs.items():  # dependency order: companions were decided before
        for e in by_kind[kind]:
            if e.name not in tables:
                continue
            problems = _check_refs(e, tables[e.name], spec, by_kind, tables, rejected, partners)
            if problems:
                reject(e.name, problems)

    qclk = {e.name: e.url_base for e in entries if e.kind == products.QUICKLOOK and e.url_base}

    # 3. The database, all in one transaction.
    rows: dict[str, int] = {}
    metadata_new: dict[str, int] = {}
    file_rows: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        applied = upgrade(conn)
        # Two loads of the same (frc, night) queue here instead of racing on the batch row.
        cur.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"hfc.batch/{frc}/{night}",))

        idmaps: dict[str, pd.Series] = {}  # file -> local id -> catalogue id
        for kind, spec in specs.items():
            if not spec.match_key:
                continue
            for e in by_kind[kind]:
                if e.name in tables:
                    idmaps[e.name], new = _match_metadata(cur, tables[e.name])
                    metadata_new[spec.table] = metadata_new.get(spec.table, 0) + new
                    file_rows[e.name] = len(tables[e.name])

        cur.execute("delete from hfc.batch where frc = %s and night = %s", (frc, night))
        cur.execute(
            """
            insert into hfc.batch (frc, night, product_format, manifest_sha256, slurm_job_id,
                                   dag_run_id, task_try, frc_version, status)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s) returning id
            """,
            (
                frc,
                night,
                fmt,
                manifest_sha,
                _opt_str(manifest.get("slurm_job_id")),
                dag_run_id,
                task_try,
                _opt_str(manifest.get("frc_version")),
                "partial" if rejected else "loaded",
            ),
        )
        batch_id = cur.fetchone()[0]

        for kind, spec in specs.items():
            if spec.match_key:
                continue
            names = [e.name for e in by_kind[kind] if e.name in tables]
            frames = []
            for name in names:
                frame = _prepare(tables[name], spec, partners, idmaps, qclk)
                frames.append(frame)
                file_rows[name] = len(frame)
            total = sum(len(f) for f in frames)
            ids = _reserve_ids(cur, spec, total)
            offset = 0
            for name, frame in zip(names, frames, strict=True):
                pk = spec.local_id.target
                local = tables[name].frame[pk].to_numpy(dtype=np.int64)
                catalogue = ids[offset : offset + len(frame)]
                idmaps[name] = pd.Series(catalogue, index=local)
                frame[pk] = catalogue.astype(str).astype(object)
                offset += len(frame)
            if frames:
                out = pd.concat(frames, ignore_index=True)
                out["batch_id"] = str(batch_id)
                _copy_frame(cur, spec.table, out)
            rows[spec.table] = total

        with cur.copy("copy hfc.batch_file (batch_id, name, archive_path, sha256, kind, rows) from stdin") as copy:
            for e in entries:
                copy.write_row((batch_id, e.name, e.archive_path, e.sha256, e.kind, file_rows.get(e.name)))
        report_rejected = [
            RejectedFile(p.file, p.line, p.column, p.reason) for name in rejected for p in rejected[name]
        ]
        if report_rejected:
            with cur.copy("copy hfc.rejected_file (batch_id, file, line, column_name, reason) from stdin") as copy:
                for r in report_rejected:
                    copy.write_row((batch_id, r.file, r.line, r.column, r.reason))
        cur.execute(
            "update hfc.batch set row_counts = %s::jsonb, finished_at = clock_timestamp() where id = %s",
            (json.dumps(rows), batch_id),
        )

    report = LoadReport(
        frc=frc,
        night=night,
        batch_id=batch_id,
        rows=rows,
        files_loaded=[n for n in (e.name for e in entries) if n in tables],
        rejected=report_rejected,
        warnings=warnings,
        metadata_new=metadata_new,
        migrations=applied,
        seconds=time.monotonic() - t0,
    )
    log.info("%s", report.summary())
    return report


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def _check_refs(entry, table, spec, by_kind, tables, rejected, partners) -> list[Problem]:
    problems: list[Problem] = []
    for col in spec.columns:
        if not col.ref or not col.stored:
            continue
        partner = _partner(entry, col.ref, by_kind.get(col.ref, []))
        if partner is None:
            return [Problem(entry.name, None, col.name, f"no {col.ref} file for it in the manifest")]
        if partner.name not in tables:
            why = "was rejected" if partner.name in rejected else "was not loaded"
            return [Problem(entry.name, None, col.name, f"its {col.ref} file {partner.name} {why}")]
        partners[(entry.name, col.target)] = partner.name
        target = tables[partner.name]
        known = target.frame[target.spec.local_id.target]
        values = table.frame[col.target]
        bad = values.notna().to_numpy() & ~values.isin(known.dropna()).to_numpy()
        for i in np.flatnonzero(bad)[: readers.MAX_PROBLEMS]:
            problems.append(
                Problem(
                    entry.name,
                    int(table.lines[i]),
                    col.name,
                    f"id {values.iat[i]} is not an id of {partner.name}",
                )
            )
    return problems


def _py(value):
    """A pandas/numpy cell as a plain Python value for psycopg (NA/NaN/NaT -> None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and np.isnan(value):
            return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _match_metadata(cur, table: ProductTable) -> tuple[pd.Series, int]:
    """Find or insert each metadata row by its content key; return local id -> catalogue id.

    The unique content index makes concurrent loaders agree: ON CONFLICT DO NOTHING waits for
    the other transaction's row and then uses it. Existing rows are never rewritten (other
    nights point at them).
    """
    spec = table.spec
    pk = spec.local_id.target
    cols = [c.target for c in spec.stored_columns if c.target != pk]
    key = list(spec.match_key)
    insert = (
        f"insert into hfc.{spec.table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))}) "
        f"on conflict ({', '.join(key)}) do nothing returning {pk}"
    )
    select = f"select {pk} from hfc.{spec.table} where " + " and ".join(f"{k} is not distinct from %s" for k in key)
    mapping, new = {}, 0
    for record in table.frame.itertuples(index=False):
        row = {name: _py(v) for name, v in zip(table.frame.columns, record, strict=True)}
        cur.execute(insert, [row[c] for c in cols])
        got = cur.fetchone()
        if got is None:
            cur.execute(select, [row[k] for k in key])
            got = cur.fetchone()
        else:
            new += 1
        mapping[row[pk]] = got[0]
    return pd.Series(mapping, dtype="int64"), new


def _prepare(table: ProductTable, spec, partners, idmaps, qclk) -> pd.DataFrame:
    """The rows of one file as database text (None = NULL), references remapped."""
    out = pd.DataFrame(table.db_text, index=pd.RangeIndex(len(table)))
    for target, _kind in spec.refs.items():
        idmap = idmaps[partners[(table.file, target)]]
        out[target] = _int_text(table.frame[target].map(idmap))
    if spec.table == "observations" and qclk:
        # The FRC leaves QCLK_URL empty; the quicklook's place on the archive is known only
        # here: clients open QCLK_URL + "/" + QCLK_FNAME.
        found = out["qclk_fname"].map(qclk)
        out["qclk_url"] = found.where(found.notna(), out["qclk_url"])
    if "feat_filename" in out.columns:
        # "name of the data file that loaded this row": fill it when the code left it empty,
        # so a feature row leads to its batch_file (sha256) entry.
        out["feat_filename"] = out["feat_filename"].where(out["feat_filename"].notna(), table.file)
    return out


def _int_text(values: pd.Series) -> np.ndarray:
    """Integers (float/Int64 with NaN/NA) as decimal text, None for missing."""
    missing = values.isna().to_numpy()
    text = values.to_numpy(dtype=float, na_value=0).astype(np.int64).astype(str).astype(object)
    text[missing] = None
    return text


def _reserve_ids(cur, spec, n: int) -> np.ndarray:
    """n ids from the table's identity sequence, ascending (concurrent loaders may interleave)."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    pk = spec.local_id.target
    cur.execute(
        "select nextval(pg_get_serial_sequence(%s, %s)) from generate_series(1, %s)",
        (f"hfc.{spec.table}", pk, n),
    )
    return np.sort(np.fromiter((r[0] for r in cur.fetchall()), dtype=np.int64, count=n))


_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _copy_column(values: np.ndarray) -> list[str]:
    """One column (object array) in COPY text format: \\N for NULL, escapes only where needed."""
    missing = pd.isna(values)
    values = values.copy()
    values[missing] = "\\N"
    sample = "".join(values[~missing])  # one C-speed scan instead of a test per cell
    if any(ch in sample for ch, _ in _ESCAPES):
        for i in np.flatnonzero(~missing):
            v = values[i]
            for ch, esc in _ESCAPES:
                v = v.replace(ch, esc)
            values[i] = v
    return values.tolist()


def _copy_frame(cur, table: str, frame: pd.DataFrame) -> None:
    """COPY a frame of database text into hfc.<table>, in chunks (bounded memory)."""
    columns = ", ".join(frame.columns)
    with cur.copy(f"copy hfc.{table} ({columns}) from stdin") as copy:
        for start in range(0, len(frame), COPY_CHUNK_ROWS):
            chunk = frame.iloc[start : start + COPY_CHUNK_ROWS]
            cols = [_copy_column(chunk[c].to_numpy(dtype=object)) for c in chunk.columns]
            copy.write(("\n".join(map("\t".join, zip(*cols, strict=True))) + "\n").encode("utf-8"))
