"""Load one night of one FRC into the catalogue: the pure logic of the ``catalogue`` task.

``load_night`` reads every file the archive stage's manifest lists (through a callable, so the
Airflow layer can read over SFTP and the CLI/tests from disk), verifies its sha256, parses it,
and then, in ONE transaction: upgrades the schema, matches shared metadata (observatory,
frc_info) by content, replaces the batch (frc, night) (the old batch's rows go by ON DELETE
CASCADE) and bulk-loads the new rows with COPY, remapping file-local ids to catalogue ids.

A file whose *content* is bad (malformed, bad values, not an HFC product name) is rejected
(recorded in ``hfc.rejected_file``, listed in the report) and skipped together with the files
that depend on it; the good files still load. An archive that cannot be read (permission
denied, file or folder missing, connection lost) or a file whose bytes are not the ones the
manifest recorded raises :class:`~hfc_tasks.catalogue.fetch.ArchiveReadError`; that and
anything that goes wrong in the database roll the whole transaction back, so the previous batch
stays as it was.

This module is the night's transaction and the path of each kind of file through it. The pieces:
``fetch`` (the archive's bytes, checked), ``readers``/``bulk`` (files to rows), ``state`` (what
the load knows so far), ``resolve`` (file-local ids to catalogue ids), ``tables`` (what the
loader asks of the catalogue's tables), ``copying`` (COPY), ``report`` (what the load did).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

import numpy as np

from hfc_tasks import manifest as manifest_mod
from hfc_tasks import products as products_mod
from hfc_tasks.catalogue import formats, readers, tables
from hfc_tasks.catalogue.bulk import BulkRows, ExactRows, Rows, bulk_eligible, drop_files, read_bulk
from hfc_tasks.catalogue.copying import CopyPipeline, copy_rows
from hfc_tasks.catalogue.fetch import fetch
from hfc_tasks.catalogue.formats import FormatError, KindSpec
from hfc_tasks.catalogue.readers import Problem, ProductFileError
from hfc_tasks.catalogue.report import LoadReport, RejectedFile
from hfc_tasks.catalogue.resolve import resolve
from hfc_tasks.catalogue.schema import require_current
from hfc_tasks.catalogue.state import IdMap, LoadState
from hfc_tasks.manifest import Entry

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20  # files read, checked and COPYed together (bulk path): bounds memory


def load_night(
    conn,
    manifest: dict,
    read_file: Callable[[str], bytes],
    *,
    dag_run_id: str | None = None,
    task_try: int | None = None,
    manifest_sha256: str | None = None,
    products: dict[str, str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    known: formats.Formats | None = None,
) -> LoadReport:
    """Replace the catalogue batch (frc, night) with the files of ``manifest``.

    ``conn``: an open psycopg 3 connection (autocommit off). The load runs in ``with
    conn.transaction()``: committed at the end when no transaction was open, else a savepoint
    in the caller's transaction. ``read_file(archive_path) -> bytes``.
    ``manifest_sha256``: the sha256 of the manifest file as stored on the archive (so a batch
    names the exact file it came from); without it, the hash of the manifest as canonical JSON.
    ``products``: the registry's per-FRC mapping of file kinds to kinds of formats.yaml, over
    the preset of the manifest's ``product_format``. ``known``: the formats (the registry's, with
    its site formats folder; default the packaged presets).
    """
    t0 = time.monotonic()
    known = known or formats.KNOWN
    frc, night, fmt, entries = manifest_mod.entries(manifest, known)
    issues = manifest_mod.issues(manifest)
    specs = known.resolve(fmt, products)
    manifest_sha = (
        manifest_sha256
        or hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    )
    warnings = [
        f"{e.name}: kind {e.kind!r} is not loaded for product format {fmt!r}"
        for e in entries
        if e.kind != products_mod.QUICKLOOK and e.kind not in specs
    ]
    qclk = {e.name: e.url_base for e in entries if e.kind == products_mod.QUICKLOOK and e.url_base}
    by_kind = {k: [e for e in entries if e.kind == k] for k in specs}

    with conn.transaction(), conn.cursor() as cur:
        schema_version = require_current(conn)  # migrations are a deploy step (hfc db upgrade), never a load's
        # Two loads of the same (frc, night) queue here instead of racing on the batch row.
        cur.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"hfc.batch/{frc}/{night}",))
        cur.execute("delete from hfc.batch where frc = %s and night = %s", (frc, night))
        cur.execute(
            """
            insert into hfc.batch (frc, night, product_format, manifest_sha256, slurm_job_id,
                                   dag_run_id, task_try, frc_version, status)
            values (%s, %s, %s, %s, %s, %s, %s, %s, 'loaded') returning id
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
            ),
        )
        batch_id = cur.fetchone()[0]
        state = LoadState(cur, batch_id, entries, specs, qclk, {e.name: i for i, e in enumerate(entries)}, by_kind,
                          warnings=warnings, frc=frc, night=night)
        for kind, spec in specs.items():
            state.idmaps[kind] = IdMap()
            if spec.is_metadata:
                # Before any row is written: ON CONFLICT needs a unique index on the match key.
                tables.check_match_key(tables.table_info(cur, spec.table, state.tables), spec.match_key)
                for e in by_kind[kind]:
                    _load_metadata_file(state, e, read_file)
            else:
                _load_kind(state, kind, spec, read_file, chunk_bytes)

        with cur.copy("copy hfc.batch_file (batch_id, name, archive_path, sha256, kind, rows) from stdin") as copy:
            for e in entries:
                copy.write_row((batch_id, e.name, e.archive_path, e.sha256, e.kind, state.file_rows.get(e.name)))
        report_rejected = [
            RejectedFile(p.file, p.line, p.column, p.reason) for name in state.rejected for p in state.rejected[name]
        ]
        if report_rejected:
            with cur.copy("copy hfc.rejected_file (batch_id, file, line, column_name, reason) from stdin") as copy:
                for r in report_rejected:
                    copy.write_row((batch_id, r.file, r.line, r.column, r.reason))
        # A manifest without files: the job ran and wrote nothing, a night without data (issue 16).
        status = "partial" if report_rejected else "loaded" if entries else "no_data"
        cur.execute(
            "update hfc.batch set row_counts = %s::jsonb, finished_at = clock_timestamp(), status = %s, "
            "issues = %s::jsonb where id = %s",
            (json.dumps(state.rows), status, json.dumps(issues), batch_id),
        )

    report = LoadReport(
        frc=frc,
        night=night,
        batch_id=batch_id,
        rows=state.rows,
        files_loaded=[e.name for e in entries if e.name in state.loaded],
        rejected=report_rejected,
        warnings=state.warnings,
        metadata_new=state.metadata_new,
        schema_version=schema_version,
        seconds=time.monotonic() - t0,
        status=status,
        issues=issues,
    )
    log.info("%s", report.summary())
    return report


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def _fetch(state: LoadState, e: Entry, read_file) -> bytes | None:
    """The file's checked bytes; None (and rejected) if its name is not an HFC product's."""
    if e.product is None:
        state.reject(e.name, [Problem(e.name, None, None, "not an HFC product file name")])
        return None
    return fetch(e, read_file, frc=state.frc, night=state.night)


def _read_exact(state: LoadState, name: str, data: bytes, spec: KindSpec) -> ExactRows | None:
    try:
        table = readers.read_product(name, data, spec)
    except ProductFileError as exc:
        state.reject(name, exc.problems)
        return None
    state.warnings.extend(table.warnings)
    return ExactRows.of(table)


# ---------------------------------------------------------------------------------- metadata


def _load_metadata_file(state: LoadState, e: Entry, read_file) -> None:
    data = _fetch(state, e, read_file)
    if data is None:
        return
    rows = _read_exact(state, e.name, data, state.specs[e.kind])
    if rows is None:
        return
    spec = rows.spec
    cols = [c.target for c in spec.stored_columns if c.target != (spec.local_id.target if spec.local_id else None)]
    ids, new = tables.match_metadata(state.cur, spec.table, spec.match_key, {c: rows.values[c] for c in cols})
    no = state.file_no[e.name]
    state.idmaps[e.kind].add(np.full(len(ids), no), rows.local, ids)
    state.file_ids[no] = ids
    state.metadata_new[spec.table] = state.metadata_new.get(spec.table, 0) + new
    state.file_rows[e.name] = len(ids)
    state.loaded.add(e.name)


def _load_kind(state: LoadState, kind: str, spec: KindSpec, read_file, chunk_bytes: int) -> None:
    """All files of one kind, chunk by chunk (bounded memory), bulk path where possible."""
    table = tables.table_info(state.cur, spec.table, state.tables)
    missing = [c.target for c in spec.stored_columns if c.target not in table.columns]
    if missing:
        raise FormatError(f"kind {spec.kind}: hfc.{spec.table} has no column(s) {missing}")
    # Before any row is written: a refused declaration fails the load with what to change.
    tables.check_owned(table, spec.kind)
    for embedded, meta_key in spec.embed_keys:
        tables.check_match_key(tables.table_info(state.cur, embedded, state.tables), meta_key)
    if state.by_kind[kind] or not (spec.is_tracking or state.tracking_only):
        state.rows.setdefault(spec.table, 0)  # e.g. no feat file = nothing detected: a real 0
    pipe = CopyPipeline()
    try:
        chunk: list[tuple[Entry, bytes]] = []
        size = 0
        for e in state.by_kind[kind]:
            data = _fetch(state, e, read_file)
            if data is None:
                continue
            chunk.append((e, data))
            size += len(data)
            if size >= chunk_bytes:
                _load_chunk(state, spec, table, chunk, pipe)
                chunk, size = [], 0
        if chunk:
            _load_chunk(state, spec, table, chunk, pipe)
        pipe.flush()
    finally:
        pipe.shutdown()


def _load_chunk(state: LoadState, spec: KindSpec, table: tables.Table, chunk: list[tuple[Entry, bytes]], pipe) -> None:
    data = {e.name: d for e, d in chunk}
    exact: list[str] = []
    parts: list[Rows] = []
    if bulk_eligible(spec):
        texts = []
        for e, d in chunk:
            try:
                texts.append((e.name, d.decode("utf-8").replace("\r\n", "\n")))
            except UnicodeDecodeError:
                exact.append(e.name)  # Latin-1 and friends: the exact reader says how it read them
        parts, refused = read_bulk(spec, texts)
        exact.extend(refused)
        for p in parts:
            state.warnings.extend(p.warnings)
    else:
        exact = list(data)
    for name in sorted(exact, key=lambda n: state.file_no[n]):
        rows = _read_exact(state, name, data[name], spec)
        if rows is not None:
            parts.append(rows)
    for rows in parts:
        _load_rows(state, spec, table, rows, data, pipe)


def _load_rows(state: LoadState, spec: KindSpec, table: tables.Table, rows: Rows, data: dict[str, bytes], pipe) -> None:
    """Resolve ids, COPY; a file PostgreSQL refuses goes through the exact path (or is rejected)."""
    if spec.embeds:
        # Matching embedded metadata writes: never inside the savepoint of a COPY in flight
        # (a refused COPY would roll the new metadata rows back under our feet).
        pipe.flush()
    supplied, problems = resolve(state, spec, table, rows)
    if problems:
        for name, found in problems.items():
            state.reject(name, found)
        rows = drop_files(rows, set(problems))
        if rows is not None:
            _load_rows(state, spec, table, rows, data, pipe)
        return
    ids = None
    if table.pk and state.needs_ids(state.kind_of(spec)):
        ids = tables.reserve_ids(state.cur, table, len(rows))
        supplied = {table.pk: ids.astype(str).astype(object), **supplied}
    columns, options, lines = rows.render(np.ones(len(rows), dtype=bool), supplied)

    def done(refused) -> None:
        if refused is None:
            _loaded(state, spec, table, rows, ids)
            return
        name, problem = refused
        if isinstance(rows, BulkRows):
            rest = drop_files(rows, {name})
            again = _read_exact(state, name, data[name], spec)
            if again is not None:
                _load_rows(state, spec, table, again, data, pipe)
            if rest is not None:
                _load_rows(state, spec, table, rest, data, pipe)
        else:
            state.reject(name, [problem])

    pipe.submit(lambda: copy_rows(state.cur.connection, spec, rows, columns, options, lines), done)


def _loaded(state: LoadState, spec: KindSpec, table: tables.Table, rows: Rows, ids: np.ndarray | None) -> None:
    kind = state.kind_of(spec)
    nos = np.array([state.file_no[n] for n in rows.names], dtype=np.int64)
    counts = np.bincount(rows.file_idx, minlength=len(rows.names))
    for name, n in zip(rows.names, counts, strict=True):
        state.file_rows[name] = int(n)
        state.loaded.add(name)
    state.rows[spec.table] = state.rows.get(spec.table, 0) + len(rows)
    if ids is None:
        return
    state.idmaps[kind].add(nos[rows.file_idx], rows.local, ids)
    keyed = {link.by[1] for s in state.specs.values() for link in s.links if link.kind == kind and link.by}
    for i, no in enumerate(nos):
        mine = rows.file_idx == i
        state.file_ids[int(no)] = ids[mine]
        for header in keyed:
            col = next((c for c in spec.columns if header in c.headers), None)
            if col is not None and col.target in rows.values:
                keys = rows.values[col.target][mine].tolist()
                state.file_keys[(int(no), header)] = dict(zip(keys, ids[mine].tolist(), strict=True))
