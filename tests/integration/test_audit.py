"""``hfc audit`` (issue 10, "the check after each fault") on the real local site.

One real night of an FRC of this test's own (the demo sunspot detector under a unique name):
submitted to the real SLURM over SSH, archived by the real archive engine (cluster -> archive,
sha256-verified, manifest), loaded into a catalogue database of its own by the real loader.
The audit passes on it; then each fault is injected on the real services, the audit must name
it, and the night is restored before the next one. The duplicate job (a second real sbatch with
the night's job name) comes last: SLURM accounting cannot be undone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from helpers import catalogue_conn_env

from hfc_tasks import products
from hfc_tasks.catalogue import schema
from hfc_tasks.ops import audit
from hfc_tasks.registry import DEFAULT_REGISTRY, load_registry

pytestmark = pytest.mark.site
HFC = str(Path(sys.executable).with_name("hfc"))
NIGHT = dt.date(2024, 7, 14)


def _wait_job(hook, job_id: str, limit: float = 180) -> str:
    """Poll SLURM until the job ends; its final state."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        status = hook.status([job_id]).get(job_id)
        if status is not None and status.is_final:
            return status.state
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job_id} did not end within {limit} s")


class Night:
    """The real night under audit and the handles to fault and restore it."""

    def __init__(self, tmp: Path, site_env: dict[str, str]):
        raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
        demo = next(f for f in raw["frcs"] if f["name"] == "demo-sunspots")
        self.name = f"h8audit-{secrets.token_hex(3)}"
        self.empty = f"{self.name}-empty"  # a job that runs and writes no product: a no_data night
        raw["frcs"] = [{**demo, "name": self.name, "cadence_seconds": 21600},
                       {**demo, "name": self.empty, "command": "echo nothing to detect"}]
        self.registry_path = tmp / "registry.yaml"
        self.registry_path.write_text(yaml.safe_dump(raw))
        self.reg = load_registry(self.registry_path)
        self.site, self.frc = self.reg.site(), self.reg.frc(self.name)
        self.run_dir = products.run_dir(self.site.products_root, self.name, NIGHT)
        self.job_name = products.job_name(self.name, NIGHT)
        admin = site_env["HFC_CATALOGUE_DSN"]
        self.db = f"hfc_test_{secrets.token_hex(6)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.admin_dsn = admin
        self.dsn = urlunsplit(urlsplit(admin)._replace(path=f"/{self.db}"))
        with psycopg.connect(self.dsn) as conn:  # migrated as a deploy does: loads only check the schema
            schema.upgrade(conn)
        # The audit reads no DSN: the catalogue connection of this test's database, by its id.
        self.conn_id = "h8_audit_catalogue"
        os.environ.update(catalogue_conn_env(self.dsn, self.conn_id))

    # -- the real stages
    def submit(self, name: str | None = None) -> str:
        """sbatch the FRC's night over SSH (the submit stage's own call) and wait for the job."""
        from hfc_tasks.provider.hooks import SlurmHook

        frc = self.reg.frc(name or self.name)
        run_dir = products.run_dir(self.site.products_root, frc.name, NIGHT)
        hook = SlurmHook(self.site.cluster_conn_id)
        try:
            verb, job_id = hook.submit(
                job_name=products.job_name(frc.name, NIGHT), run_dir=run_dir,
                command=frc.render_command(night=NIGHT, run_dir=run_dir, frc_root=self.site.frc_root,
                                           archive_url=self.site.public_url_base),
                resources=frc.slurm, default_partition=self.site.default_partition,
                lock_file=posixpath.join(self.site.products_root, ".hfc-submit.lock"), attempt="h8-audit-1")
            assert verb == "SUBMIT", (verb, job_id)
            assert _wait_job(hook, job_id) == "COMPLETED"
        finally:
            hook.close()
        if frc.name == self.name:
            self.job_id = job_id
        return job_id

    def archive(self, name: str | None = None, job_id: str | None = None) -> dict:
        from hfc_tasks.archive import ArchiveTarget, archive_night
        from hfc_tasks.provider.hooks import ssh_endpoint

        frc = self.reg.frc(name or self.name)
        target = ArchiveTarget(frc=frc.name, archive_dir=frc.archive_dir, observatory=frc.observatory,
                               instrument=frc.instrument, night=NIGHT,
                               run_dir=products.run_dir(self.site.products_root, frc.name, NIGHT),
                               archive_root=self.site.archive_root, public_url_base=self.site.public_url_base,
                               product_format=frc.product_format, frc_version=frc.version,
                               slurm_job_id=job_id or self.job_id)
        _, manifest = archive_night(ssh_endpoint(self.site.cluster_conn_id),
                                    ssh_endpoint(self.site.archive_conn_id), target)
        if frc.name == self.name:
            self.manifest = manifest
        return manifest

    def load(self, name: str | None = None) -> None:
        from hfc_tasks.catalogue import load_night
        from hfc_tasks.manifest import find as find_manifest
        from hfc_tasks.provider.hooks import sftp_session

        frc = self.reg.frc(name or self.name)
        with sftp_session(self.site.archive_conn_id) as sftp:
            _, raw = find_manifest(sftp, self.site.archive_root, frc.name, frc.archive_dir, NIGHT)

            def read(rel: str) -> bytes:
                with sftp.open(posixpath.join(self.site.archive_root, rel), "rb") as f:
                    return f.read()

            with psycopg.connect(self.dsn) as conn:
                report = load_night(conn, json.loads(raw), read, manifest_sha256=hashlib.sha256(raw).hexdigest())
        assert report.ok and (report.rows or report.status == "no_data"), report.summary()

    # -- faults and restores
    def archive_path(self, entry: dict) -> str:
        return posixpath.join(self.site.archive_root, entry["archive_path"])

    def sftp(self, which: str):
        from hfc_tasks.provider.hooks import sftp_session

        return sftp_session(self.site.archive_conn_id if which == "archive" else self.site.cluster_conn_id)

    def put(self, which: str, path: str, data: bytes) -> None:
        with self.sftp(which) as sftp:
            sftp.putfo(io.BytesIO(data), path)

    def get(self, which: str, path: str) -> bytes:
        with self.sftp(which) as sftp, sftp.open(path, "rb") as f:
            return f.read()

    def remove(self, which: str, path: str) -> None:
        with self.sftp(which) as sftp:
            sftp.remove(path)

    def sql(self, query: str, *args) -> list:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    def audit(self, frcs: list[str] | None = None, **kw) -> audit.AuditReport:
        return audit.audit(self.reg, NIGHT, frcs=frcs or [self.name], conn_id=self.conn_id, **kw)

    def cli(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([HFC, "--registry", str(self.registry_path), "audit", "--night", NIGHT.isoformat(),
                               "--frc", self.name, "--conn-id", self.conn_id, *extra],
                              capture_output=True, text=True, env=os.environ.copy(), timeout=120)

    def cleanup(self) -> None:
        os.environ.pop(f"AIRFLOW_CONN_{self.conn_id.upper()}", None)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        # This test's own trees on the local site (its FRC names are unique to this run).
        for name in (self.name, self.empty):
            for root in (self.site.archive_root, self.site.products_root):
                shutil.rmtree(Path(root) / name, ignore_errors=True)


@pytest.fixture(scope="module")
def night(site, tmp_path_factory):
    n = Night(tmp_path_factory.mktemp("audit"), site)
    try:
        t0 = time.monotonic()
        n.submit()
        n.archive()
        n.load()
        print(f"real night built in {time.monotonic() - t0:.1f} s: job {n.job_id}, {len(n.manifest['files'])} files")
        yield n
    finally:
        n.cleanup()


def _problems(report: audit.AuditReport, check: str | None = None) -> list[audit.Finding]:
    return [f for x in report.nights for f in x.problems if check is None or f.check == check]


def _csv(night: Night, kind: str = "feat") -> dict:
    return next(f for f in night.manifest["files"] if f["kind"] == kind)


def test_a_clean_night_passes_and_the_cli_says_so(night):
    r = night.cli("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    (one,) = out["nights"]
    assert out["ok"] and one["ok"] and one["frc"] == night.name
    assert [j["job_id"] for j in one["jobs"]] == [night.job_id]
    assert one["rows"] and all(v["expected"] == v["actual"] > 0 for v in one["rows"].values()), one["rows"]
    text = night.cli()
    assert text.returncode == 0 and "audit: OK" in text.stdout and f"{night.job_id} COMPLETED" in text.stdout


def test_an_archive_file_deleted_and_not_on_the_cluster_is_lost(night):
    entry = _csv(night)
    path = night.archive_path(entry)
    data = night.get("archive", path)
    night.remove("archive", path)
    try:
        report = night.audit()
        (lost,) = _problems(report, "file")
        assert lost.file == entry["name"] and "neither on the archive" in lost.text and path in lost.text
        r = night.cli()
        assert r.returncode == 1 and f"LOST, neither on the archive ({path})" in r.stdout
        # Still on the cluster in its run folder: not lost (archive the night again).
        cpath = posixpath.join(night.run_dir, entry["name"])
        night.put("cluster", cpath, data)
        try:
            again = night.audit()
            assert not _problems(again), [f.text for f in _problems(again)]
            assert any("still on the cluster" in f.text and f.file == entry["name"] for f in again.nights[0].findings)
        finally:
            night.remove("cluster", cpath)
    finally:
        night.put("archive", path, data)
    assert night.audit().ok


def test_a_truncated_archive_file_is_partial_and_a_stray_part_is_a_leftover(night):
    entry = _csv(night, "init")
    path = night.archive_path(entry)
    data = night.get("archive", path)
    night.put("archive", path, data[: len(data) // 2])
    stray = f"{path}.{secrets.token_hex(4)}.part"
    night.put("archive", stray, data[:100])
    try:
        report = night.audit()
        partial = _problems(report, "partial")
        assert [p.file for p in partial] == [entry["name"]] and f"{len(data) // 2} bytes" in partial[0].text
        # The stray .part is reported as a leftover, never as a partial real file.
        leftovers = [f for f in report.nights[0].findings if f.check == "leftover"]
        assert [f.level for f in leftovers] == ["NOTE"] and stray in leftovers[0].text
        assert night.cli().returncode == 1
    finally:
        night.put("archive", path, data)
    report = night.audit()
    assert report.ok, report.text()
    night.remove("archive", stray)


def test_a_deleted_catalogue_row_is_missing(night):
    (batch,) = night.sql("select id from hfc.batch where frc = %s and night = %s", night.name, NIGHT)
    night.sql("delete from hfc.sunspots where id_sunspot = (select max(id_sunspot) from hfc.sunspots "
              "where batch_id = %s)", batch[0])
    try:
        (missing,) = _problems(night.audit(), "rows")
        assert missing.table == "sunspots" and "MISSING 1 row(s)" in missing.text
        assert _csv(night)["name"] in missing.text
    finally:
        night.load()  # the real loader replaces the batch: the night restored
    assert night.audit().ok


def test_rows_inserted_twice_are_duplicates(night):
    (batch,) = night.sql("select id from hfc.batch where frc = %s and night = %s", night.name, NIGHT)
    cols = [r[0] for r in night.sql(
        "select column_name from information_schema.columns where table_schema = 'hfc' and table_name = "
        "'observations' and is_identity = 'NO' order by ordinal_position")]
    n = night.sql("select count(*) from hfc.observations where batch_id = %s", batch[0])[0][0]
    night.sql(f"insert into hfc.observations ({', '.join(cols)}) select {', '.join(cols)} from hfc.observations "
              "where batch_id = %s", batch[0])
    try:
        (dup,) = _problems(night.audit(), "rows")
        assert dup.table == "observations" and "DUPLICATE" in dup.text and f"has {2 * n}," in dup.text
    finally:
        night.load()
    assert night.audit().ok


def test_connection_errors_exit_2_naming_the_connection(night):
    env = {**os.environ, "AIRFLOW_CONN_HFC_ARCHIVE": json.dumps(
        {"conn_type": "sftp", "host": "127.0.0.1", "port": 1, "login": "archive",
         "extra": json.loads(os.environ["AIRFLOW_CONN_HFC_ARCHIVE"]).get("extra", {})})}
    r = subprocess.run([HFC, "--registry", str(night.registry_path), "audit", "--night", NIGHT.isoformat(),
                        "--frc", night.name, "--conn-id", night.conn_id],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "archive (SFTP) connection 'hfc_archive'" in r.stderr


def test_a_no_data_night_has_a_batch_of_0_rows(night):
    job = night.submit(night.empty)
    manifest = night.archive(night.empty, job)
    assert manifest["no_data"] and manifest["files"] == []
    night.load(night.empty)
    report = night.audit([night.empty])
    assert report.ok, report.text()
    assert any(f.check == "batch" and "(no_data): 0 rows" in f.text for f in report.nights[0].findings)
    # Every FRC of the night at once (the operator's usual call): both pass.
    assert night.cli("--frc", night.empty).returncode == 0
    # A row in a no_data batch (another night's row filed under it) is named.
    (empty,) = night.sql("select id from hfc.batch where frc = %s and night = %s", night.empty, NIGHT)
    (full,) = night.sql("select id from hfc.batch where frc = %s and night = %s", night.name, NIGHT)
    cols = [r[0] for r in night.sql(
        "select column_name from information_schema.columns where table_schema = 'hfc' and table_name = "
        "'observations' and is_identity = 'NO' and column_name <> 'batch_id' order by ordinal_position")]
    night.sql(f"insert into hfc.observations ({', '.join(cols)}, batch_id) select {', '.join(cols)}, %s "
              "from hfc.observations where batch_id = %s limit 1", empty[0], full[0])
    bad = night.audit([night.empty])
    texts = [p.text for p in _problems(bad)]
    assert any("DUPLICATE or extra rows" in t and "no file of this night" in t for t in texts), texts
    assert any("no_data night, but batch" in t for t in texts), texts


def test_a_second_job_with_the_same_name_is_a_possible_silent_duplicate(night):
    # Last test: SLURM accounting keeps the second job for ever.
    from hfc_tasks.provider.hooks import SlurmHook

    hook = SlurmHook(night.site.cluster_conn_id)
    try:
        out = hook.check(f"sbatch --parsable -p {night.site.default_partition} --job-name={night.job_name} "
                         f"-o /dev/null --wrap true", what="sbatch")
        second = out.strip().split(";")[0]
        assert _wait_job(hook, second) == "COMPLETED"
    finally:
        hook.close()
    report = night.audit()
    jobs = _problems(report, "jobs")
    assert any("SILENT DUPLICATE" in p.text and p.job == f"{night.job_id},{second}" for p in jobs), report.text()
    r = night.cli()
    assert r.returncode == 1 and "SILENT DUPLICATE" in r.stdout and second in r.stdout
    # Recomputed on purpose: the operator says how many jobs.
    assert night.audit(expect_jobs=2).ok
    assert night.cli("--expect-jobs", "2").returncode == 0
