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
manifest recorded raises :class:`ArchiveReadError`; that and anything that goes wrong in the
database roll the whole transaction back, so the previous batch stays as it was.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psycopg

from hfc_tasks import manifest as manifest_mod
from hfc_tasks import products as products_mod
from hfc_tasks.catalogue import readers
from hfc_tasks.catalogue.bulk import BulkRows, ExactRows, Rows, bulk_eligible, drop_files, read_bulk
from hfc_tasks.catalogue.readers import KindSpec, Problem, ProductFileError
from hfc_tasks.catalogue.schema import upgrade
from hfc_tasks.manifest import Entry

log = logging.getLogger(__name__)

COPY_CHUNK_ROWS = 50_000  # rows per COPY write: bounds memory on big nights
CHUNK_BYTES = 16 << 20  # files read, checked and COPYed together (bulk path): bounds memory
# What the archive answered when a file cannot be opened: the reason, and what to do about it.
_READ_ERRNOS = {
    errno.ENOENT: ("no such file", "the file or a folder above it was moved or deleted after the archive stage "
                   "wrote the manifest: put it back, or re-run the night (clear its 'submit')"),
    errno.EACCES: ("permission denied", "the archive account may not read the file or a folder above it: "
                   "restore the permissions, then clear the 'catalogue' task"),
    errno.EPERM: ("operation not permitted", "restore the archive account's access, then clear 'catalogue'"),
    errno.EISDIR: ("is a folder", "a folder stands where the manifest lists a file: fix the archive tree"),
    errno.ENOTDIR: ("a path component is not a folder", "fix the archive tree"),
}


_ERRNO_OF = {FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES, IsADirectoryError: errno.EISDIR,
             NotADirectoryError: errno.ENOTDIR}  # an OSError raised without its errno


class ArchiveReadError(RuntimeError):
    """A file the manifest lists could not be read from the archive, or its bytes are not those
    the manifest recorded: the archive, not the file's content, is at fault. Nothing is loaded
    (the transaction rolls back: the previous batch of the night stays as it was).

    ``path``: the manifest's archive path (relative to the archive root; callers that know the
    root name the full path). ``reason``: what went wrong, ``hint``: what to do. ``transient``:
    the connection was lost (a retry may succeed); else it needs someone to fix the archive.
    """

    def __init__(self, path: str, reason: str, hint: str, *, transient: bool, frc: str = "", night=None):
        self.path, self.reason, self.hint, self.transient = path, reason, hint, transient
        self.frc, self.night = frc, night
        super().__init__(path)

    @classmethod
    def of(cls, path: str, exc: BaseException) -> ArchiveReadError:
        """From what ``read_file`` raised: a refusal of the archive (errno) or a lost connection."""
        code = getattr(exc, "errno", None) or next(
            (c for k, c in _ERRNO_OF.items() if isinstance(exc, k)), None)
        if code in _READ_ERRNOS:
            reason, hint = _READ_ERRNOS[code]
            return cls(path, f"{reason} ({exc})", hint, transient=False)
        return cls(path, f"connection lost or SFTP failure ({type(exc).__name__}: {exc})",
                   "the task is retried; if it keeps failing, check the archive host and its connection",
                   transient=True)

    def message(self, where: str | None = None) -> str:
        """The operator's message; ``where``: the file's full name on the archive (default: its path)."""
        who = f"{self.frc} {self.night}: " if self.frc else ""
        kept = f"the previous batch of {self.frc} {self.night}" if self.frc else "the previous batch"
        return (f"{who}cannot load from the archive: {where or self.path}: {self.reason}. Nothing was loaded: "
                f"{kept} is kept unchanged. {self.hint[:1].upper()}{self.hint[1:]}.")

    def __str__(self) -> str:
        return self.message()


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
    status: str = "loaded"  # hfc.batch.status: loaded | partial | no_data
    issues: list[dict] = field(default_factory=list)  # hfc.batch.issues: the manifest's unmatched/stale notes

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def rejected_files(self) -> list[str]:
        return list(dict.fromkeys(r.file for r in self.rejected))

    def to_dict(self) -> dict:
        """JSON-friendly (the operator's XCom, the CLI's --json)."""
        return {
            "frc": self.frc,
            "night": self.night.isoformat(),
            "batch_id": self.batch_id,
            "rows": dict(self.rows),
            "files_loaded": len(self.files_loaded),
            "rejected": [
                {"file": r.file, "line": r.line, "column": r.column, "reason": r.reason} for r in self.rejected
            ],
            "warnings": list(self.warnings),
            "metadata_new": dict(self.metadata_new),
            "migrations": list(self.migrations),
            "seconds": round(self.seconds, 3),
            "status": self.status,
            "issues": list(self.issues),
        }

    def summary(self) -> str:
        rows = ", ".join(f"{k}={v}" for k, v in self.rows.items()) or "no rows"
        text = (
            f"batch {self.batch_id} ({self.frc} {self.night}): {rows}; "
            f"{len(self.files_loaded)} file(s) loaded in {self.seconds:.2f}s"
        )
        if self.status == "no_data":
            text += "; no data: the job ran and wrote no product"
        if self.issues:
            text += "; NOT CLEAN: " + "; ".join(manifest_mod.issue_text(i) for i in self.issues)
        if self.rejected:
            text += f"; {len(self.rejected_files)} file(s) REJECTED:\n  " + "\n  ".join(str(r) for r in self.rejected)
        return text


def _stem(product: products_mod.ProductName) -> tuple:
    return (product.code, product.version, product.stamp, product.observatory_tag)


class _Partners:
    """Which file of a kind another file's references point into (indexed: nights of 10,000
    files pair in linear time).

    Data files (init/feat/obs/pp...) pair by their shared ``<code>_<ver>_<stamp>_<obs>`` stem;
    metadata files (no date in the name) by code and version, preferring the same observatory
    tag, then an untagged file, then the only file of that kind in the manifest.
    """

    def __init__(self, candidates: list[Entry]) -> None:
        self.dated = {_stem(c.product): c for c in candidates if c.product and c.product.stamp}
        self.undated = [c for c in candidates if c.product and not c.product.stamp]

    def of(self, entry: Entry) -> Entry | None:
        me = entry.product
        if me is None:
            return None
        found = self.dated.get(_stem(me))
        if found is not None:
            return found
        same = [c for c in self.undated if (c.product.code, c.product.version) == (me.code, me.version)]
        for pick in (
            [c for c in same if c.product.observatory_tag == me.observatory_tag],
            [c for c in same if c.product.observatory_tag is None],
            same if len(same) == 1 else [],
            self.undated if len(self.undated) == 1 else [],
        ):
            if len(pick) == 1:
                return pick[0]
        return None


# ---------------------------------------------------------------------------------- ids


class _IdMap:
    """(file number, local id) -> catalogue id for the loaded files of one kind, looked up in bulk."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._keys = np.empty(0, dtype=np.int64)
        self._ids = np.empty(0, dtype=np.int64)
        self.files: set[int] = set()

    @staticmethod
    def key(file_no, local) -> np.ndarray:
        return np.asarray(file_no, dtype=np.int64) * (1 << 33) + (np.asarray(local, dtype=np.int64) + (1 << 31))

    def add(self, file_no: np.ndarray, local: np.ndarray, catalogue: np.ndarray) -> None:
        self._parts.append((self.key(file_no, local), np.asarray(catalogue, dtype=np.int64)))
        self.files.update(np.unique(file_no).tolist())

    def lookup(self, file_no: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalogue ids, found) for each (file, local id); NaN locals are not found."""
        if self._parts:
            keys = np.concatenate([self._keys, *(k for k, _ in self._parts)])
            ids = np.concatenate([self._ids, *(i for _, i in self._parts)])
            order = np.argsort(keys, kind="stable")
            self._keys, self._ids, self._parts = keys[order], ids[order], []
        local = np.asarray(local, dtype=float)
        valid = ~np.isnan(local)
        want = self.key(file_no, np.where(valid, local, 0))
        pos = np.searchsorted(self._keys, want)
        pos = np.minimum(pos, max(len(self._keys) - 1, 0))
        found = valid & (len(self._keys) > 0)
        if len(self._keys):
            found &= self._keys[pos] == want
        ids = np.where(found, self._ids[pos] if len(self._ids) else 0, 0)
        return ids, found


@dataclass
class _Table:
    """What the loader needs to know about a catalogue table (read once per load)."""

    name: str
    columns: set[str]
    pk: str | None


def _table_info(cur, table: str, cache: dict) -> _Table:
    if table not in cache:
        cur.execute(
            "select column_name from information_schema.columns where table_schema = 'hfc' and table_name = %s",
            (table,),
        )
        columns = {r[0] for r in cur.fetchall()}
        if not columns:
            raise readers.FormatError(f"catalogue table hfc.{table} does not exist")
        cur.execute(
            """
            select a.attname from pg_index i
            join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
            where i.indrelid = %s::regclass and i.indisprimary
            """,
            (f"hfc.{table}",),
        )
        row = cur.fetchone()
        cache[table] = _Table(table, columns, row[0] if row else None)
    return cache[table]


def _reserve_ids(cur, table: _Table, n: int) -> np.ndarray:
    """n ids from the table's identity sequence, ascending (concurrent loaders may interleave)."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    cur.execute(
        "select min(v), max(v) from (select nextval(pg_get_serial_sequence(%s, %s)) v"
        " from generate_series(1, %s)) s",
        (f"hfc.{table.name}", table.pk, n),
    )
    low, high = cur.fetchone()
    if high - low + 1 == n:  # the usual case: one block, nobody else drew from the sequence meanwhile
        return np.arange(low, high + 1, dtype=np.int64)
    cur.execute(
        "select nextval(pg_get_serial_sequence(%s, %s)) from generate_series(1, %s)",
        (f"hfc.{table.name}", table.pk, n),
    )
    return np.sort(np.fromiter((r[0] for r in cur.fetchall()), dtype=np.int64, count=n))


# ---------------------------------------------------------------------------------- load


@dataclass
class _Ctx:
    """State of one load (inside its transaction)."""

    cur: object
    batch_id: int
    entries: list[Entry]
    specs: dict[str, KindSpec]
    qclk: dict[str, str]
    file_no: dict[str, int]
    by_kind: dict[str, list[Entry]]
    tables: dict = field(default_factory=dict)  # table name -> _Table
    idmaps: dict[str, _IdMap] = field(default_factory=dict)  # file kind -> ids of its loaded files
    file_ids: dict[int, np.ndarray] = field(default_factory=dict)  # file -> catalogue ids, row order
    file_keys: dict[tuple[int, str], dict] = field(default_factory=dict)  # (file, HEADER) -> key -> id
    loaded: set[str] = field(default_factory=set)
    rejected: dict[str, list[Problem]] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    metadata_new: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _partners: dict[str, _Partners] = field(default_factory=dict)
    frc: str = ""  # for messages (ArchiveReadError)
    night: dt.date | None = None

    def partners(self, kind: str) -> _Partners:
        if kind not in self._partners:
            self._partners[kind] = _Partners(self.by_kind.get(kind, []))
        return self._partners[kind]

    def reject(self, name: str, problems: list[Problem]) -> None:
        self.rejected.setdefault(name, []).extend(problems)

    @property
    def tracking_only(self) -> bool:
        """A tracker's night: only tracking files (its counts say nothing of detections)."""
        present = [k for k, files in self.by_kind.items() if files]
        return bool(present) and all(_is_tracking(self.specs[k]) for k in present)

    def needs_ids(self, kind: str) -> bool:
        """Whether a later kind of this load points at this kind's rows (then ids are reserved)."""
        return any(
            kind in spec.depends_on and self.by_kind.get(k) for k, spec in self.specs.items() if k != kind
        )


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
) -> LoadReport:
    """Replace the catalogue batch (frc, night) with the files of ``manifest``.

    ``conn``: an open psycopg 3 connection (autocommit off). The load runs in ``with
    conn.transaction()``: committed at the end when no transaction was open, else a savepoint
    in the caller's transaction. ``read_file(archive_path) -> bytes``.
    ``manifest_sha256``: the sha256 of the manifest file as stored on the archive (so a batch
    names the exact file it came from); without it, the hash of the manifest as canonical JSON.
    ``products``: the registry's per-FRC mapping of file kinds to kinds of formats.yaml, over
    the preset of the manifest's ``product_format``.
    """
    t0 = time.monotonic()
    frc, night, fmt, entries = manifest_mod.entries(manifest, readers.KNOWN.formats)
    issues = manifest_mod.issues(manifest)
    specs = readers.KNOWN.resolve(fmt, products)
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
        applied = upgrade(conn)
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
        ctx = _Ctx(cur, batch_id, entries, specs, qclk, {e.name: i for i, e in enumerate(entries)}, by_kind,
                   warnings=warnings, frc=frc, night=night)
        for kind, spec in specs.items():
            ctx.idmaps[kind] = _IdMap()
            if spec.is_metadata:
                for e in by_kind[kind]:
                    _load_metadata_file(ctx, e, read_file)
            else:
                _load_kind(ctx, kind, spec, read_file, chunk_bytes)

        with cur.copy("copy hfc.batch_file (batch_id, name, archive_path, sha256, kind, rows) from stdin") as copy:
            for e in entries:
                copy.write_row((batch_id, e.name, e.archive_path, e.sha256, e.kind, ctx.file_rows.get(e.name)))
        report_rejected = [
            RejectedFile(p.file, p.line, p.column, p.reason) for name in ctx.rejected for p in ctx.rejected[name]
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
            (json.dumps(ctx.rows), status, json.dumps(issues), batch_id),
        )

    report = LoadReport(
        frc=frc,
        night=night,
        batch_id=batch_id,
        rows=ctx.rows,
        files_loaded=[e.name for e in entries if e.name in ctx.loaded],
        rejected=report_rejected,
        warnings=ctx.warnings,
        metadata_new=ctx.metadata_new,
        migrations=applied,
        seconds=time.monotonic() - t0,
        status=status,
        issues=issues,
    )
    log.info("%s", report.summary())
    return report


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def _archive_fault(exc: BaseException) -> bool:
    """Whether a reader's exception is the archive's answer or a lost connection (OS errors,
    end of stream, the SSH libraries' own errors), as opposed to a bug in the caller."""
    return isinstance(exc, OSError | EOFError) or any(
        c.__module__.split(".")[0] in ("paramiko", "asyncssh") for c in type(exc).__mro__)


def _fetch(ctx: _Ctx, e: Entry, read_file) -> bytes | None:
    """The file's bytes, checked against the manifest's sha256; None (and rejected) if not."""
    if e.product is None:
        ctx.reject(e.name, [Problem(e.name, None, None, "not an HFC product file name")])
        return None
    try:
        data = read_file(e.archive_path)
    except Exception as exc:
        if not _archive_fault(exc):
            raise  # a bug, not the archive: as it is
        err = ArchiveReadError.of(e.archive_path, exc)
        err.frc, err.night = ctx.frc, ctx.night
        raise err from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != e.sha256:
        # Not a content problem of the FRC: the archive stage verified these bytes against the
        # cluster's. The copy was altered, overwritten (a later run, a rewriting tracker) or the
        # manifest is stale: loading it would replace the good batch with unverified rows.
        raise ArchiveReadError(
            e.archive_path, f"sha256 {digest} on the archive, the manifest says {e.sha256} (the archive copy is "
            "not the file the archive stage verified)",
            "find out what changed it (another run, a tracker that rewrites its files, a disk fault); to "
            "recompute the night clear its 'submit' (the archive stage replaces an archive copy only for an FRC "
            "with rewrites: true: else remove the bad copy first)", transient=False, frc=ctx.frc, night=ctx.night)
    return data


def _read_exact(ctx: _Ctx, name: str, data: bytes, spec: KindSpec) -> ExactRows | None:
    try:
        table = readers.read_product(name, data, spec)
    except ProductFileError as exc:
        ctx.reject(name, exc.problems)
        return None
    ctx.warnings.extend(table.warnings)
    return ExactRows.of(table)


# ---------------------------------------------------------------------------------- metadata


def _load_metadata_file(ctx: _Ctx, e: Entry, read_file) -> None:
    data = _fetch(ctx, e, read_file)
    if data is None:
        return
    rows = _read_exact(ctx, e.name, data, ctx.specs[e.kind])
    if rows is None:
        return
    spec = rows.spec
    cols = [c.target for c in spec.stored_columns if c.target != (spec.local_id.target if spec.local_id else None)]
    ids, new = _match_metadata(ctx.cur, spec.table, spec.match_key, {c: rows.values[c] for c in cols})
    no = ctx.file_no[e.name]
    ctx.idmaps[e.kind].add(np.full(len(ids), no), rows.local, ids)
    ctx.file_ids[no] = ids
    ctx.metadata_new[spec.table] = ctx.metadata_new.get(spec.table, 0) + new
    ctx.file_rows[e.name] = len(ids)
    ctx.loaded.add(e.name)


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


def _match_metadata(cur, table: str, key: tuple[str, ...], columns: dict[str, pd.Series]) -> tuple[np.ndarray, int]:
    """Find or insert each metadata row by its content key; return each row's catalogue id.

    The unique content index makes concurrent loaders agree: ON CONFLICT DO NOTHING waits for
    the other transaction's row and then uses it. Existing rows are never rewritten (other
    nights point at them). Identical rows are looked up once.
    """
    pk = _table_info(cur, table, {}).pk
    cols = list(columns)
    insert = (
        f"insert into hfc.{table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))}) "
        f"on conflict ({', '.join(key)}) do nothing returning {pk}"
    )
    select = f"select {pk} from hfc.{table} where " + " and ".join(f"{k} is not distinct from %s" for k in key)
    records = [tuple(_py(v) for v in row) for row in zip(*(columns[c] for c in cols), strict=True)]
    found: dict[tuple, int] = {}
    new = 0
    for rec in records:
        if rec in found:
            continue
        row = dict(zip(cols, rec, strict=True))
        cur.execute(insert, rec)
        got = cur.fetchone()
        if got is None:
            cur.execute(select, [row[k] for k in key])
            got = cur.fetchone()
        else:
            new += 1
        found[rec] = got[0]
    return np.array([found[r] for r in records], dtype=np.int64), new


# ---------------------------------------------------------------------------------- data kinds


class _Pipeline:
    """COPYs run in one worker thread while the main thread reads and checks the next chunk.

    PostgreSQL parses, checks foreign keys and updates indexes on one core while Python reads the
    next files on the other. The connection's own lock serialises any other statement the main
    thread sends meanwhile (id reservations), so nothing runs concurrently on the connection.
    ``on_done`` callbacks run in the main thread, in order, when the job is collected.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hfc-copy")
        self._pending: list[tuple[Future, Callable]] = []

    def submit(self, job: Callable, on_done: Callable) -> None:
        self.flush()  # one COPY in flight at most: its result may change what comes next
        self._pending.append((self._pool.submit(job), on_done))

    def flush(self) -> None:
        while self._pending:
            future, on_done = self._pending.pop(0)
            on_done(future.result())

    def shutdown(self) -> None:
        """Wait for the worker (a COPY in flight finishes or fails) without running callbacks:
        after an error nothing more is sent, the caller's transaction is rolled back."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()


def _load_kind(ctx: _Ctx, kind: str, spec: KindSpec, read_file, chunk_bytes: int) -> None:
    """All files of one kind, chunk by chunk (bounded memory), bulk path where possible."""
    table = _table_info(ctx.cur, spec.table, ctx.tables)
    missing = [c.target for c in spec.stored_columns if c.target not in table.columns]
    if missing:
        raise readers.FormatError(f"kind {spec.kind}: hfc.{spec.table} has no column(s) {missing}")
    if ctx.by_kind[kind] or not (_is_tracking(spec) or ctx.tracking_only):
        ctx.rows.setdefault(spec.table, 0)  # e.g. no feat file = nothing detected: a real 0
    pipe = _Pipeline()
    try:
        chunk: list[tuple[Entry, bytes]] = []
        size = 0
        for e in ctx.by_kind[kind]:
            data = _fetch(ctx, e, read_file)
            if data is None:
                continue
            chunk.append((e, data))
            size += len(data)
            if size >= chunk_bytes:
                _load_chunk(ctx, spec, table, chunk, pipe)
                chunk, size = [], 0
        if chunk:
            _load_chunk(ctx, spec, table, chunk, pipe)
        pipe.flush()
    finally:
        pipe.shutdown()


def _load_chunk(ctx: _Ctx, spec: KindSpec, table: _Table, chunk: list[tuple[Entry, bytes]], pipe) -> None:
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
            ctx.warnings.extend(p.warnings)
    else:
        exact = list(data)
    for name in sorted(exact, key=lambda n: ctx.file_no[n]):
        rows = _read_exact(ctx, name, data[name], spec)
        if rows is not None:
            parts.append(rows)
    for rows in parts:
        _load_rows(ctx, spec, table, rows, data, pipe)


def _load_rows(ctx: _Ctx, spec: KindSpec, table: _Table, rows: Rows, data: dict[str, bytes], pipe) -> None:
    """Resolve ids, COPY; a file PostgreSQL refuses goes through the exact path (or is rejected)."""
    if spec.embeds:
        # Matching embedded metadata writes: never inside the savepoint of a COPY in flight
        # (a refused COPY would roll the new metadata rows back under our feet).
        pipe.flush()
    supplied, problems = _resolve(ctx, spec, table, rows)
    if problems:
        for name, found in problems.items():
            ctx.reject(name, found)
        rows = drop_files(rows, set(problems))
        if rows is not None:
            _load_rows(ctx, spec, table, rows, data, pipe)
        return
    ids = None
    if table.pk and ctx.needs_ids(_file_kind(ctx, spec)):
        ids = _reserve_ids(ctx.cur, table, len(rows))
        supplied = {table.pk: ids.astype(str).astype(object), **supplied}
    columns, options, lines = rows.render(np.ones(len(rows), dtype=bool), supplied)

    def done(refused) -> None:
        if refused is None:
            _loaded(ctx, spec, table, rows, ids)
            return
        name, problem = refused
        if isinstance(rows, BulkRows):
            rest = drop_files(rows, {name})
            again = _read_exact(ctx, name, data[name], spec)
            if again is not None:
                _load_rows(ctx, spec, table, again, data, pipe)
            if rest is not None:
                _load_rows(ctx, spec, table, rest, data, pipe)
        else:
            ctx.reject(name, [problem])

    pipe.submit(lambda: _copy_rows(ctx.cur.connection, spec, rows, columns, options, lines), done)


def _is_tracking(spec: KindSpec) -> bool:
    return any(c.ref_by or c.ref_table for c in spec.columns)


def _file_kind(ctx: _Ctx, spec: KindSpec) -> str:
    return next(k for k, s in ctx.specs.items() if s is spec)


def _loaded(ctx: _Ctx, spec: KindSpec, table: _Table, rows: Rows, ids: np.ndarray | None) -> None:
    kind = _file_kind(ctx, spec)
    nos = np.array([ctx.file_no[n] for n in rows.names], dtype=np.int64)
    counts = np.bincount(rows.file_idx, minlength=len(rows.names))
    for name, n in zip(rows.names, counts, strict=True):
        ctx.file_rows[name] = int(n)
        ctx.loaded.add(name)
    ctx.rows[spec.table] = ctx.rows.get(spec.table, 0) + len(rows)
    if ids is None:
        return
    ctx.idmaps[kind].add(nos[rows.file_idx], rows.local, ids)
    keyed = {link.by[1] for s in ctx.specs.values() for link in s.links if link.kind == kind and link.by}
    for i, no in enumerate(nos):
        mine = rows.file_idx == i
        ctx.file_ids[int(no)] = ids[mine]
        for header in keyed:
            col = next((c for c in spec.columns if header in c.headers), None)
            if col is not None and col.target in rows.values:
                keys = rows.values[col.target][mine].tolist()
                ctx.file_keys[(int(no), header)] = dict(zip(keys, ids[mine].tolist(), strict=True))


def _int_text(ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    out = np.asarray(ids, dtype=np.int64).astype(str).astype(object)
    out[~found] = None
    return out


def _resolve(ctx: _Ctx, spec: KindSpec, table: _Table, rows: Rows) -> tuple[dict[str, np.ndarray], dict]:
    """Catalogue values for the id columns of ``rows``; problems per file for what points nowhere."""
    problems: dict[str, list[Problem]] = {}
    n = len(rows)
    entries = [ctx.entries[ctx.file_no[name]] for name in rows.names]

    def problem(i_file: int, line, column, reason) -> None:
        found = problems.setdefault(rows.names[i_file], [])
        if len(found) < readers.MAX_PROBLEMS:
            found.append(Problem(rows.names[i_file], None if line is None else int(line), column, reason))

    def partners(kind: str, column: str) -> np.ndarray:
        """Per file, the number of its loaded companion file of ``kind`` (-1: problem recorded)."""
        out = np.full(len(entries), -1, dtype=np.int64)
        for i, e in enumerate(entries):
            p = ctx.partners(kind).of(e)
            if p is None:
                problem(i, None, column, f"no {kind} file for it in the manifest")
            elif p.name not in ctx.loaded:
                why = "was rejected" if p.name in ctx.rejected else "was not loaded"
                problem(i, None, column, f"its {kind} file {p.name} {why}")
            else:
                out[i] = ctx.file_no[p.name]
        return out

    def report_missing(missing: np.ndarray, column: str, why) -> None:
        for r in np.flatnonzero(missing)[: readers.MAX_PROBLEMS * 4]:
            problem(rows.file_idx[r], rows.lines[r], column, why(r))

    supplied: dict[str, np.ndarray] = {}
    for col in spec.columns:
        if col.target is None or col.embed:
            continue
        if col.ref and not col.ref_by:
            part = partners(col.ref, col.name)
            values = rows.values[col.target].to_numpy(dtype=float, na_value=np.nan)
            ids, found = ctx.idmaps[col.ref].lookup(part[rows.file_idx], values)
            bad = ~found & ~np.isnan(values) & (part[rows.file_idx] >= 0)
            names = [ctx.entries[p].name if p >= 0 else "" for p in part]
            report_missing(bad, col.name, lambda r, v=values, c=names: (
                f"id {int(v[r])} is not an id of {c[rows.file_idx[r]]}"))
            supplied[col.target] = _int_text(ids, found)
        elif col.ref_by:
            supplied[col.target] = _resolve_by_name(ctx, spec, rows, col, problem)
        elif col.ref_table:
            values = rows.values[col.target].to_numpy(dtype=float, na_value=np.nan)
            ref = _table_info(ctx.cur, col.ref_table, ctx.tables)
            wanted = np.unique(values[~np.isnan(values)]).astype(np.int64)
            ctx.cur.execute(f"select {ref.pk} from hfc.{ref.name} where {ref.pk} = any(%s)", (wanted.tolist(),))
            known = np.array([r[0] for r in ctx.cur.fetchall()], dtype=np.int64)
            bad = ~np.isnan(values) & ~np.isin(values, known)
            report_missing(bad, col.name, lambda r, v=values, t=ref.name: (
                f"{int(v[r])} is not an id of hfc.{t} (the catalogue has no such row)"))
        elif col.fill_file and isinstance(rows, BulkRows):
            # Supplied only when the file left some empty (else the line's own text is COPYed).
            v = rows.values[col.target].to_numpy(dtype=object) if col.target in rows.values else None
            missing = np.ones(n, dtype=bool) if v is None else np.array(pd.isna(v), dtype=bool)
            if missing.any():
                names = np.array(rows.names, dtype=object)[rows.file_idx]
                supplied[col.target] = names if v is None else np.where(missing, names, v)
    for link in spec.links:
        part = partners(link.kind, link.target)
        if link.by is None:
            ids = np.zeros(n, dtype=np.int64)
            for i, p in enumerate(part):
                if p < 0:
                    continue
                theirs = ctx.file_ids.get(int(p), np.empty(0))
                if len(theirs) != 1:
                    problem(i, None, None, f"{link.target}: its {link.kind} file {ctx.entries[p].name} has "
                            f"{len(theirs)} rows, exactly one is needed")
                else:
                    ids[rows.file_idx == i] = theirs[0]
            supplied[link.target] = _int_text(ids, np.ones(n, dtype=bool))
        else:
            mine, theirs = link.by
            keys = rows.values[f"@{mine}"].tolist()
            ids = np.zeros(n, dtype=np.int64)
            found = np.zeros(n, dtype=bool)
            for r, key in enumerate(keys):
                p = part[rows.file_idx[r]]
                if p < 0:
                    continue
                got = ctx.file_keys.get((int(p), theirs), {}).get(key)
                if got is None:
                    problem(rows.file_idx[r], rows.lines[r], mine,
                            f"{key!r} is not the {theirs} of any row of {ctx.entries[p].name}")
                else:
                    ids[r], found[r] = got, True
            supplied[link.target] = _int_text(ids, found)
    for embedded, target in spec.embeds:
        meta = readers.KNOWN.metadata_tables[embedded]
        columns = {c.target: rows.values[c.target] for c in spec.embedded(embedded)}
        ids, new = _match_metadata(ctx.cur, embedded, meta, columns)
        ctx.metadata_new[embedded] = ctx.metadata_new.get(embedded, 0) + new
        supplied[target] = _int_text(ids, np.ones(n, dtype=bool))
    if spec.table == "observations" and "qclk_fname" in rows.values:
        # The FRC leaves QCLK_URL empty; the quicklook's place on the archive is known only
        # here: clients open QCLK_URL + "/" + QCLK_FNAME.
        fname = rows.values["qclk_fname"].tolist()
        given = rows.values["qclk_url"].tolist() if "qclk_url" in rows.values else [None] * n
        url = [ctx.qclk.get(f) or g for f, g in zip(fname, given, strict=True)]
        supplied["qclk_url"] = np.array([None if pd.isna(u) else u for u in url], dtype=object)
    if "src_file" in table.columns:  # the file of each row, for provenance (migration 0003)
        supplied["src_file"] = np.array(rows.names, dtype=object)[rows.file_idx]
    if "local_id" in table.columns and "local_id" not in supplied:
        supplied["local_id"] = _int_text(np.nan_to_num(rows.local).astype(np.int64), ~np.isnan(rows.local))
    supplied["batch_id"] = np.full(n, str(ctx.batch_id), dtype=object)
    return supplied, problems


def _resolve_by_name(ctx: _Ctx, spec: KindSpec, rows: Rows, col, problem) -> np.ndarray:
    """Local ids of the file named in each row (tracking files): in this load, or the catalogue."""
    by_col = next(c for c in spec.columns if c.name == col.ref_by)
    names = rows.values[by_col.target].tolist()
    values = rows.values[col.target].to_numpy(dtype=float, na_value=np.nan)
    target_spec = ctx.specs[col.ref]
    target = _table_info(ctx.cur, target_spec.table, ctx.tables)
    idmap = ctx.idmaps[col.ref]
    nos = np.full(len(names), -1, dtype=np.int64)
    outside = sorted({n for n in names if isinstance(n, str) and n not in ctx.file_no})
    extra = _IdMap()
    if outside:
        ctx.cur.execute(
            f"select feat_filename, local_id, {target.pk} from hfc.{target.name}"
            " where feat_filename = any(%s) and local_id is not null",
            (outside,),
        )
        got = ctx.cur.fetchall()
        pseudo = {name: len(ctx.entries) + i for i, name in enumerate(outside)}
        if got:
            extra.add(np.array([pseudo[r[0]] for r in got]), np.array([r[1] for r in got]),
                      np.array([r[2] for r in got]))
    for r, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name in ctx.file_no:
            if name in ctx.loaded:
                nos[r] = ctx.file_no[name]
            else:
                why = "was rejected" if name in ctx.rejected else "is not loaded"
                problem(rows.file_idx[r], rows.lines[r], by_col.name, f"{col.ref} file {name} {why}")
        else:
            nos[r] = len(ctx.entries) + outside.index(name)
    inside = nos < len(ctx.entries)
    ids = np.zeros(len(names), dtype=np.int64)
    found = np.zeros(len(names), dtype=bool)
    if inside.any():
        i_ids, i_found = idmap.lookup(np.where(inside, nos, 0), values)
        ids, found = np.where(inside, i_ids, ids), inside & i_found & (nos >= 0)
    if (~inside).any():
        o_ids, o_found = extra.lookup(nos, values)
        ids = np.where(~inside, o_ids, ids)
        found |= ~inside & o_found
    for r in np.flatnonzero(~found & (nos >= 0) & ~np.isnan(values))[: readers.MAX_PROBLEMS * 4]:
        where = "this manifest" if nos[r] < len(ctx.entries) else "the catalogue"
        problem(rows.file_idx[r], rows.lines[r], col.name,
                f"id {int(values[r])} of {names[r]} is not in {where}")
    return _int_text(ids, found)


# ---------------------------------------------------------------------------------- COPY

_LINE = re.compile(r"line (\d+)")
_COLUMN = re.compile(r"column (\w+)")
_KEY = re.compile(r"Key \((\w+)\)=")


def _copy_rows(conn, spec: KindSpec, rows: Rows, columns: list[str], options: str, lines: list[str]):
    """COPY the rows in a savepoint. None when done; else (file, problem) of the first row
    PostgreSQL refused (the savepoint is rolled back: nothing of these rows stays)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            _copy_lines(cur, spec.table, columns, options, lines)
    except (
        psycopg.errors.DataError,
        psycopg.errors.NotNullViolation,
        psycopg.errors.CheckViolation,
        psycopg.errors.UniqueViolation,  # e.g. a PR_LOCFNAME another night already loaded
    ) as exc:
        context = exc.diag.context or ""
        m = _LINE.search(context)
        if not m:
            raise
        r = int(m.group(1)) - 1
        i_file = int(rows.file_idx[r])
        col = _COLUMN.search(context) or _KEY.search(exc.diag.message_detail or "")
        column = col.group(1) if col else getattr(exc.diag, "column_name", None)
        header = next((c.name for c in spec.columns if c.target == column), column)
        reason = (exc.diag.message_primary or str(exc)).strip()
        if exc.diag.message_detail and isinstance(exc, psycopg.errors.UniqueViolation):
            reason += f" ({exc.diag.message_detail.strip()})"
        return rows.names[i_file], Problem(rows.names[i_file], int(rows.lines[r]), header and header.upper(), reason)
    return None


def _copy_lines(cur, table: str, columns: list[str], options: str, lines: list[str]) -> None:
    """COPY prepared lines into hfc.<table>, written in pieces (bounded memory)."""
    with cur.copy(f"copy hfc.{table} ({', '.join(columns)}) from stdin{options}") as copy:
        for start in range(0, len(lines), COPY_CHUNK_ROWS):
            copy.write("\n".join(lines[start : start + COPY_CHUNK_ROWS]) + "\n")
