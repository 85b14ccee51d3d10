"""``hfc audit``: check what one night left behind, after a fault (issue 10, "the check after each fault").

For each FRC and the night, against the real services:

* **files**: every product the FRC's job wrote (the manifest's ``files``) is on the archive with
  the manifest's size and sha256, or still in its run folder on the cluster; never neither;
* **partial**: no file under a real product name on the archive differs from the manifest
  (a stray ``<name>.<token>.part`` is a *leftover* of an interrupted copy: reported, not a problem);
* **catalogue**: the night has exactly one batch (``hfc.batch``, key (frc, night)), loaded from
  this manifest, whose rows per table equal the rows its files hold (read with the catalogue's
  own readers); a ``no_data`` night has a batch of 0 rows;
* **jobs**: the number of SLURM jobs named ``hfc.<frc>.<YYYYMMDD>`` (sacct on the cluster, plus
  squeue for jobs that ended too recently for accounting) is the
  number the operator asked for (1, or ``expect_jobs`` after a deliberate recompute); more than
  one COMPLETED job otherwise is a possible silent duplicate.

Pure logic here (no Airflow import at module level): :func:`audit_night` takes open sessions;
:func:`audit` opens them from the site's Airflow connection ids (``AIRFLOW_CONN_*``, through
:mod:`hfc_tasks.provider.hooks`, the one host-key policy). The CLI, the tests and the fault tests call it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
import shlex
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from hfc_tasks import products

OK, PROBLEM, NOTE = "OK", "PROBLEM", "NOTE"
DEFAULT_SINCE = "2000-01-01"  # sacct -S: all time unless the operator narrows it
PART = ".part"


class AuditConnectionError(RuntimeError):
    """A connection the audit needs cannot be opened or used (exit 2): names the connection."""


@dataclass
class Finding:
    level: str  # OK | PROBLEM | NOTE
    check: str  # manifest | file | partial | leftover | batch | rows | jobs
    text: str
    file: str | None = None
    table: str | None = None
    job: str | None = None


@dataclass
class NightAudit:
    frc: str
    night: dt.date
    findings: list[Finding] = field(default_factory=list)
    manifest_path: str = ""
    batch_id: int | None = None
    jobs: list[dict] = field(default_factory=list)
    rows: dict[str, dict[str, int | None]] = field(default_factory=dict)  # table -> expected, actual

    def add(self, level: str, check: str, text: str, **kw) -> None:
        self.findings.append(Finding(level, check, text, **kw))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == PROBLEM]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"frc": self.frc, "night": self.night.isoformat(), "ok": self.ok,
                "manifest": self.manifest_path, "batch_id": self.batch_id, "jobs": self.jobs, "rows": self.rows,
                "findings": [asdict(f) for f in self.findings]}

    def text(self) -> str:
        lines = [f"== {self.frc}  night {self.night}"]
        lines += [f"   {f.level:<8} {f.check:<9} {f.text}" for f in self.findings]
        lines.append(f"   => {'OK' if self.ok else f'{len(self.problems)} PROBLEM(S)'}")
        return "\n".join(lines)


@dataclass
class AuditReport:
    night: dt.date
    nights: list[NightAudit]

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nights)

    def to_dict(self) -> dict:
        return {"night": self.night.isoformat(), "ok": self.ok, "nights": [n.to_dict() for n in self.nights]}

    def text(self) -> str:
        n = sum(len(x.problems) for x in self.nights)
        tail = "audit: OK, nothing lost, nothing duplicated" if self.ok else f"audit: {n} PROBLEM(S) found"
        return "\n".join([x.text() for x in self.nights] + [tail])


# ------------------------------------------------------------------------------------ helpers


def _stat(sftp, path: str):
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if getattr(exc, "errno", None) == 2:
            return None
        raise


def _read(sftp, path: str) -> bytes:
    with sftp.open(path, "rb") as f:
        f.prefetch()
        return f.read()


def _listdir(sftp, path: str) -> list[str]:
    try:
        return [a.filename for a in sftp.listdir_attr(path) if not stat.S_ISDIR(a.st_mode or 0)]
    except OSError:
        return []


def parse_jobs(stdout: str) -> list[dict]:
    """``sacct -X -n -P -o JobIDRaw,State,ExitCode,Submit`` -> one dict per job (last line wins)."""
    jobs: dict[str, dict] = {}
    for line in stdout.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 4 or not cols[0]:
            continue
        state = cols[1].split()[0].rstrip("+") if cols[1].strip() else "UNKNOWN"
        jobs[cols[0]] = {"job_id": cols[0], "state": state, "exit_code": cols[2], "submit": cols[3]}
    return list(jobs.values())


def _submitted_before(submit: str, since: str) -> bool:
    """Whether squeue's submit time (``%V``, ISO) is before ``since`` (as sacct -S reads it)."""
    try:
        return dt.datetime.fromisoformat(submit) < dt.datetime.fromisoformat(since)
    except ValueError:
        return False  # unknown form: count the job rather than hide it


def jobs_command(job_name: str, since: str = DEFAULT_SINCE) -> str:
    return (f"sacct -X -n -P --name={shlex.quote(job_name)} -S {shlex.quote(since)} -E now "
            "-o JobIDRaw,State,ExitCode,Submit")


# ------------------------------------------------------------------------------ one (FRC, night)


def audit_night(
    frc,
    site,
    night: dt.date,
    *,
    archive_sftp,
    cluster_sftp,
    run_cluster: Callable[[str], tuple[int, str, str]],
    catalogue,
    expect_jobs: int | None = None,
    since: str = DEFAULT_SINCE,
    known=None,
) -> NightAudit:
    """Audit one (FRC, night). ``frc``/``site``: registry entries; ``archive_sftp``/``cluster_sftp``:
    paramiko SFTP clients; ``run_cluster(cmd) -> (rc, out, err)`` on the cluster's login node;
    ``catalogue``: an open psycopg connection; ``known``: the registry's formats (default the presets)."""
    from hfc_tasks.manifest import find as find_manifest

    res = NightAudit(frc.name, night)
    run_dir = products.run_dir(site.products_root, frc.name, night)
    res.manifest_path, raw = find_manifest(archive_sftp, site.archive_root, frc.name, frc.archive_dir, night)
    manifest = None
    if raw is None:
        kept = [n for n in _listdir(cluster_sftp, run_dir) if not n.endswith((".out", ".err"))]
        res.add(PROBLEM, "manifest", f"no manifest at {res.manifest_path} (archive): the night is not archived"
                + (f"; {len(kept)} file(s) still in {run_dir} on the cluster (nothing lost): run (clear) its "
                   "'archive' task" if kept else f" and {run_dir} on the cluster holds no product"))
    else:
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            res.add(PROBLEM, "manifest", f"{res.manifest_path} is not valid JSON ({exc})")
    data: dict[str, bytes | None] = {}  # name -> the file's bytes matching the manifest (None: none)
    if manifest is not None:
        _check_files(res, manifest, site, run_dir, archive_sftp, cluster_sftp, data)
    _check_batch(res, frc, manifest, raw, data, catalogue, known)
    _check_jobs(res, frc, manifest, run_cluster, expect_jobs, since)
    return res


def _check_files(res, manifest, site, run_dir, archive_sftp, cluster_sftp, data) -> None:
    files = manifest.get("files") or []
    on_archive = on_cluster = 0
    for f in files:
        name, path = f["name"], posixpath.join(site.archive_root, f["archive_path"])
        st = _stat(archive_sftp, path)
        if st is not None:
            body = _read(archive_sftp, path)
            digest = hashlib.sha256(body).hexdigest()
            if st.st_size == f.get("size", st.st_size) and digest == f["sha256"]:
                on_archive += 1
                data[name] = body
                continue
            res.add(PROBLEM, "partial", f"{path}: PARTIAL or altered under its real name: {st.st_size} bytes, "
                    f"sha256 {digest[:12]}..., the manifest says {f.get('size')} bytes, sha256 {f['sha256'][:12]}...",
                    file=name)
        cpath = posixpath.join(run_dir, name)
        cst = _stat(cluster_sftp, cpath)
        if cst is not None:
            body = _read(cluster_sftp, cpath)
            if hashlib.sha256(body).hexdigest() == f["sha256"]:
                on_cluster += 1
                data[name] = body
                if st is None:
                    res.add(OK, "file", f"{name}: not on the archive ({path}), still on the cluster ({cpath}) "
                            "with the manifest's sha256: archive the night again", file=name)
                continue
            res.add(PROBLEM, "file", f"{name}: the cluster copy {cpath} differs from the manifest's sha256", file=name)
        elif st is None:
            res.add(PROBLEM, "file", f"{name}: LOST, neither on the archive ({path}) nor on the cluster ({cpath})",
                    file=name)
        data.setdefault(name, None)
    if files:
        level = OK if on_archive == len(files) else NOTE
        res.add(level, "files", f"{on_archive} of {len(files)} file(s) on the archive with the manifest's sha256"
                + (f", {on_cluster} still on the cluster" if on_cluster else "") + f" (manifest {res.manifest_path})")
    elif manifest.get("no_data"):
        res.add(OK, "files", f"no data: the job ran and wrote no product (manifest {res.manifest_path})")
    else:
        res.add(PROBLEM, "manifest", f"{res.manifest_path}: no files and not marked no_data")
    for name in manifest.get("unmatched") or []:
        res.add(NOTE, "file", f"{name!r}: not a product name, left in the run folder {run_dir}", file=name)
    for e in manifest.get("stale") or []:
        res.add(NOTE, "file", f"{e.get('name')}: stale (job {e.get('slurm_job_id')}'s), kept on the archive, "
                "not loaded", file=e.get("name"))
    # Leftovers of interrupted copies: <name>.<token>.part beside a real name of this night.
    names = {f["name"] for f in files} | {posixpath.basename(res.manifest_path)}
    folders = {posixpath.dirname(posixpath.join(site.archive_root, f["archive_path"])) for f in files}
    folders.add(posixpath.dirname(res.manifest_path))
    for folder in sorted(folders):
        for entry in _listdir(archive_sftp, folder):
            if entry.endswith(PART) and any(entry.startswith(n + ".") for n in names):
                res.add(NOTE, "leftover", f"{posixpath.join(folder, entry)}: leftover of an interrupted copy "
                        "(not a product name; safe to delete)", file=entry)


def _batch_tables(cur) -> list[str]:
    return [r[0] for r in cur.execute(
        "select table_name from information_schema.columns where table_schema = 'hfc' and column_name = 'batch_id' "
        "and table_name in (select table_name from information_schema.tables where table_schema = 'hfc' "
        "and table_type = 'BASE TABLE') and table_name not in ('batch_file', 'rejected_file') order by 1")]


def _check_batch(res, frc, manifest, raw, data, conn, known=None) -> None:
    from hfc_tasks.catalogue import formats, readers

    known = known or formats.KNOWN

    with conn.cursor() as cur:
        batches = cur.execute(
            "select id, to_jsonb(b)->>'status', manifest_sha256, slurm_job_id from hfc.batch b "
            "where frc = %s and night = %s order by id", (frc.name, res.night)).fetchall()
        if not batches:
            res.add(PROBLEM, "batch", f"no batch in the catalogue for ({frc.name}, {res.night})")
            return
        if len(batches) > 1:
            res.add(PROBLEM, "batch", f"{len(batches)} batches for ({frc.name}, {res.night}): "
                    f"{', '.join(str(b[0]) for b in batches)} (DUPLICATE)")
        batch_id, status, sha, job = batches[-1]
        res.batch_id = batch_id
        if raw is not None and sha != hashlib.sha256(raw).hexdigest():
            res.add(PROBLEM, "batch", f"batch {batch_id} was loaded from another manifest than {res.manifest_path} "
                    "(clear the night's 'catalogue' task)")
        if manifest is not None and manifest.get("slurm_job_id") and str(manifest["slurm_job_id"]) != str(job):
            res.add(PROBLEM, "batch", f"batch {batch_id} holds job {job}'s files, the manifest job "
                    f"{manifest['slurm_job_id']}'s", job=str(job))
        rejected = {r[0] for r in cur.execute("select distinct file from hfc.rejected_file where batch_id = %s",
                                             (batch_id,))}
        for name in sorted(rejected):
            res.add(NOTE, "rows", f"{name}: rejected by the catalogue (hfc.rejected_file of batch {batch_id}): "
                    "its rows are not expected", file=name)
        actual = {t: cur.execute(f"select count(*) from hfc.{t} where batch_id = %s",
                                 (batch_id,)).fetchone()[0] for t in _batch_tables(cur)}
        recorded = dict(cur.execute("select name, rows from hfc.batch_file where batch_id = %s",
                                    (batch_id,)).fetchall())
    if manifest is None:
        res.add(NOTE, "rows", f"batch {batch_id} ({status}): rows {actual}; no manifest to compare with")
        return
    specs = known.resolve(manifest.get("product_format") or frc.product_format, frc.products or None)
    expected: dict[str, int] = {}
    unknown: set[str] = set()
    files_of: dict[str, list[str]] = {}
    for f in manifest.get("files") or []:
        spec = specs.get(f["kind"])
        if spec is None or spec.is_metadata or f["name"] in rejected:
            continue
        files_of.setdefault(spec.table, []).append(f["name"])
        body = data.get(f["name"])
        if body is None:
            unknown.add(spec.table)
            continue
        try:
            n = len(readers.read_product(f["name"], body, spec))
        except readers.ProductFileError as exc:
            res.add(PROBLEM, "rows", f"{f['name']}: cannot be read ({exc}) but was not rejected", file=f["name"])
            unknown.add(spec.table)
            continue
        expected[spec.table] = expected.get(spec.table, 0) + n
        if f["name"] in recorded and recorded[f["name"]] not in (None, n):
            res.add(PROBLEM, "rows", f"{f['name']}: holds {n} row(s), batch {batch_id} recorded "
                    f"{recorded[f['name']]} for it (hfc.batch_file)", file=f["name"], table=spec.table)
    for table in sorted(set(expected) | {t for t, n in actual.items() if n}):
        want, got = expected.get(table, 0), actual.get(table, 0)
        res.rows[table] = {"expected": None if table in unknown else want, "actual": got}
        files = ", ".join(files_of.get(table, [])) or "no file of this night"
        if table in unknown:
            res.add(NOTE, "rows", f"hfc.{table}: {got} row(s); not all its files are readable to count", table=table)
        elif got < want:
            res.add(PROBLEM, "rows", f"hfc.{table}: MISSING {want - got} row(s): batch {batch_id} has {got}, "
                    f"the files hold {want} ({files})", table=table)
        elif got > want:
            res.add(PROBLEM, "rows", f"hfc.{table}: DUPLICATE or extra rows: batch {batch_id} has {got}, "
                    f"the files hold {want} ({files})", table=table)
    if manifest.get("no_data") and not manifest.get("files"):
        if any(actual.values()) or status != "no_data":
            res.add(PROBLEM, "batch", f"no_data night, but batch {batch_id} is {status} with rows {actual}")
        else:
            res.add(OK, "batch", f"batch {batch_id} (no_data): 0 rows, as the manifest says")
    elif not [f for f in res.findings if f.check in ("rows", "batch") and f.level == PROBLEM]:
        shown = ", ".join(f"{t} {v['actual']}" for t, v in res.rows.items())
        res.add(OK, "batch", f"one batch {batch_id} ({status}); rows per table equal its files': {shown}")


def _check_jobs(res, frc, manifest, run_cluster, expect_jobs, since) -> None:
    name = products.job_name(frc.name, res.night)
    cmd = jobs_command(name, since)
    rc, out, err = run_cluster(cmd)
    if rc != 0:
        raise AuditConnectionError(f"{frc.name} {res.night}: sacct failed on the cluster (exit {rc}): "
                                   f"{err.strip() or out.strip()}")
    jobs = {j["job_id"]: j for j in parse_jobs(out)}
    # Accounting lags a job that just ended: the controller still knows it (squeue --states=all).
    rc, out, _ = run_cluster(f"squeue -h --states=all --name={shlex.quote(name)} -o '%i|%T||%V'")
    for j in parse_jobs(out) if rc == 0 else []:
        if _submitted_before(j["submit"], since):
            continue  # the controller still remembers it (MinJobAge), but it is outside the window
        jobs.setdefault(j["job_id"], j)
    res.jobs = sorted(jobs.values(), key=lambda j: int(j["job_id"]) if j["job_id"].isdigit() else 0)
    ids = ", ".join(f"{j['job_id']} {j['state']}" for j in res.jobs) or "none"
    completed = [j for j in res.jobs if j["state"] == "COMPLETED"]
    want = 1 if expect_jobs is None else expect_jobs
    window = "all time" if since == DEFAULT_SINCE else f"since {since}"
    if len(res.jobs) != want:
        res.add(PROBLEM, "jobs", f"{len(res.jobs)} SLURM job(s) named {name} ({window}), expected {want}: {ids}",
                job=",".join(j["job_id"] for j in res.jobs) or None)
    else:
        res.add(OK, "jobs", f"{len(res.jobs)} SLURM job(s) named {name} ({window}), as expected: {ids}",
                job=",".join(j["job_id"] for j in res.jobs) or None)
    if len(completed) > 1 and expect_jobs is None:
        res.add(PROBLEM, "jobs", f"possible SILENT DUPLICATE: {len(completed)} COMPLETED jobs named {name}: "
                f"{', '.join(j['job_id'] for j in completed)} (pass --expect-jobs {len(res.jobs)} if the night "
                "was recomputed on purpose)", job=",".join(j["job_id"] for j in completed))
    mid = str((manifest or {}).get("slurm_job_id") or "")
    if mid and mid not in {j["job_id"] for j in res.jobs}:
        res.add(NOTE, "jobs", f"the manifest's job {mid} is not among them (accounting window?)", job=mid)


# ------------------------------------------------------------------------------ the whole night


def audit(
    registry,
    night: dt.date,
    *,
    frcs: list[str] | None = None,
    site: str | None = None,
    expect_jobs: int | None = None,
    since: str = DEFAULT_SINCE,
    conn_id: str | None = None,
) -> AuditReport:
    """Audit ``night`` for the site's FRCs (or ``frcs``). Connections from the site's connection
    ids (``AIRFLOW_CONN_*``); ``conn_id`` overrides the catalogue's. Raises
    :class:`AuditConnectionError` naming the connection that cannot be used."""
    from hfc_tasks.provider.catalogue_db import catalogue_connect
    from hfc_tasks.provider.hooks import SlurmHook, sftp_session

    s = registry.site(site)
    chosen = [registry.frc(n) for n in frcs] if frcs else registry.frcs_for(site)

    def opening(conn_id: str, what: str, fn):
        try:
            return fn()
        except Exception as exc:  # any failure to connect: exit 2, naming the connection
            raise AuditConnectionError(f"cannot open the {what} connection {conn_id!r}: "
                                       f"{type(exc).__name__}: {exc}") from exc

    archive_cm = sftp_session(s.archive_conn_id)
    cluster_cm = sftp_session(s.cluster_conn_id)
    archive = opening(s.archive_conn_id, "archive (SFTP)", archive_cm.__enter__)
    try:
        cluster = opening(s.cluster_conn_id, "cluster (SFTP)", cluster_cm.__enter__)
        try:
            hook = SlurmHook(s.cluster_conn_id)

            def run(cmd: str) -> tuple[int, str, str]:
                try:
                    return hook.run(cmd)
                except Exception as exc:
                    raise AuditConnectionError(f"the cluster (SSH) connection {s.cluster_conn_id!r} failed running "
                                               f"sacct: {type(exc).__name__}: {exc}") from exc

            catalogue_id = conn_id or s.catalogue_conn_id
            conn = opening(catalogue_id, "catalogue (PostgreSQL)",
                           lambda: catalogue_connect(catalogue_id, application_name="hfc-audit"))
            try:
                conn.autocommit = True
                nights = [audit_night(f, s, night, archive_sftp=archive, cluster_sftp=cluster, run_cluster=run,
                                      catalogue=conn, expect_jobs=expect_jobs, since=since, known=registry.formats)
                          for f in chosen]
            finally:
                conn.close()
                hook.close()
        finally:
            cluster_cm.__exit__(None, None, None)
    finally:
        archive_cm.__exit__(None, None, None)
    return AuditReport(night, nights)
