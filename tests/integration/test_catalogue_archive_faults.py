"""The ``catalogue`` task when the archive cannot be read (issue 16, item 4).

The real task (``CatalogueLoadOperator`` run by ``airflow dags test``: task state and log read
back from Airflow), real SFTP to the local site's ``archive`` account, real PostgreSQL (a
``fresh_db`` of its own). A night is loaded, then the archive is
broken the way it happens in production: a folder the archive account may not read
(``chmod 000 results/2024``), a file moved away, a folder moved away, a connection lost in the
middle of the reads, a file whose bytes no longer match the manifest. Each time the task fails
with a message naming the FRC, the night, the archive path and the cause, and the previous batch
stays as it was (same batch id, same rows). Only a file whose *content* is bad is a per-file
rejection (tests/integration/test_catalogue_malformed.py).

Every test works in its own archive root (``hfc/_test_catalogue/<uuid>``) and catalogue database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from catalogue_files import Archive
from helpers import relay
from test_catalogue_load import _stamp, feat_csv, feat_values, init_csv, quicklook_name

from hfc_tasks import products
from hfc_tasks.ops.cli import main
from hfc_tasks.registry import DEFAULT_REGISTRY

pytestmark = pytest.mark.site

FRC = "h6-sdoss"
NIGHT = dt.date(2024, 3, 1)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"
DAG_ID = "test_catalogue_stage"


def _chown(path: Path, user: str = "archive") -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def sdoss_night(spots=(3, 2)) -> Archive:
    """An SDOSS night of FRC ``FRC`` in the archive layout (folder = the FRC's archive_dir)."""
    night = Archive(FRC, NIGHT, "sdoss", instrument_path="SDO/HMI")
    night.sample("sdoss_106_frc_info.csv", "frc_info")
    night.sample("sdoss_106_observatory.csv", "observatory")
    for i, n in enumerate(spots):
        t = dt.datetime.combine(NIGHT, dt.time()) + dt.timedelta(minutes=20 * i)
        stem = f"sdoss_106_{_stamp(t)}_sdo"
        night.add(f"{stem}_init.csv", "init", init_csv(t))
        night.add(f"{stem}_feat.csv", "feat", feat_csv(feat_values(t, n, f"{stem}_feat.csv")))
        night.add(quicklook_name(t), "quicklook", b"\xff\xd8 jpeg " + stem.encode())
    return night


class Site:
    """One test's archive root (owned by the archive account), registry and catalogue database."""

    def __init__(self, site: dict[str, str], db: str, tmp: Path, airflow: tuple[dict, Path]):
        self.root = Path(site["HFC_SITE_DIR"]) / "home/archive/hfc/_test_catalogue" / uuid.uuid4().hex[:12]
        for p in reversed([self.root, *self.root.parents][:3]):
            if not p.exists():
                p.mkdir(mode=0o755)
                _chown(p)
        self.restore: list = []  # finalisers: permissions and moved folders put back
        raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
        local = raw["sites"]["local"]
        local["archive_root"] = str(self.root)
        local["public_url_base"] = f"file://{self.root}"
        local["catalogue_conn_id"] = "h6_catalogue"
        demo = next(f for f in raw["frcs"] if f["name"] == "demo-sunspots")
        raw["frcs"].append({**demo, "name": FRC})
        self.registry = tmp / "registry.yaml"
        self.registry.write_text(yaml.safe_dump(raw))
        url = urlsplit(db)
        self.env = {
            **airflow[0],
            "AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS),
            "HFC_TEST_CATALOGUE_REGISTRY": str(self.registry),
            "HFC_TEST_CATALOGUE_FRC": FRC,
            "AIRFLOW_CONN_H6_CATALOGUE": json.dumps({
                "conn_type": "postgres", "host": url.hostname, "port": url.port, "login": url.username,
                "password": url.password, "schema": url.path.lstrip("/")}),
        }
        self.airflow_db = airflow[1]
        self.db = db
        self.runs = 0

    def publish(self, night: Archive) -> None:
        """Write the night's files and manifest as the archive stage leaves them."""
        for rel, data in night.files.items():
            self.write(rel, data)
        self.write(products.manifest_relpath(FRC, FRC, night.night), json.dumps(night.manifest, indent=1).encode())

    def ingest(self) -> None:
        """Load the night as it is on the archive now, with `hfc ingest` (in-process: faster than
        a DAG run; the same loader and the same batch (FRC, night) as the task)."""
        manifest = self.root / products.manifest_relpath(FRC, FRC, NIGHT)
        from unittest import mock

        from helpers import TEST_CATALOGUE_CONN_ID, catalogue_conn_env

        with mock.patch.dict(os.environ, catalogue_conn_env(self.db)):
            assert main(["ingest", str(manifest), "--root", str(self.root), "--conn-id", TEST_CATALOGUE_CONN_ID]) == 0

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        for p in missing:
            _chown(p)
        path.write_bytes(data)
        _chown(path)

    def folder(self, rel: str) -> Path:
        return self.root / FRC / rel

    def chmod(self, path: Path, mode: int) -> None:
        old = path.stat().st_mode & 0o7777
        self.restore.append(lambda: os.chmod(path, old))
        os.chmod(path, mode)

    def move(self, path: Path) -> None:
        away = path.with_name(path.name + ".moved")
        path.rename(away)
        self.restore.append(lambda: away.rename(path))

    def load(self) -> tuple[str, str]:
        """One run of the catalogue task for NIGHT (a DAG run of its own): (task state, log)."""
        self.runs += 1
        logical = (dt.date(2031, 1, 1) + dt.timedelta(days=self.runs)).isoformat()
        proc = subprocess.run(
            [AIRFLOW, "dags", "test", DAG_ID, logical, "--conf", json.dumps({"night": NIGHT.isoformat()})],
            env=self.env, capture_output=True, text=True, timeout=300,
        )
        with sqlite3.connect(self.airflow_db) as conn:
            run_id = conn.execute("select run_id from dag_run where dag_id = ? order by id desc limit 1",
                                  (DAG_ID,)).fetchone()[0]
            state = conn.execute("select state from task_instance where dag_id = ? and run_id = ?",
                                 (DAG_ID, run_id)).fetchone()[0]
        return state, proc.stdout + proc.stderr

    def batch(self) -> tuple:
        """The night's batch and every row it owns: what must not change when a load fails."""
        with psycopg.connect(self.db) as c:
            batches = c.execute("select id, status, row_counts, dag_run_id from hfc.batch where frc = %s"
                                " and night = %s", (FRC, NIGHT)).fetchall()
            obs = c.execute("select id_observations, filename, batch_id from hfc.observations order by 1").fetchall()
            spots = c.execute("select id_sunspot, feat_x_pix, feat_filename, batch_id from hfc.sunspots"
                              " order by 1").fetchall()
            files = c.execute("select batch_id, name, sha256, rows from hfc.batch_file order by 1, 2").fetchall()
            rejected = c.execute("select count(*) from hfc.rejected_file").fetchone()[0]
        return batches, obs, spots, files, rejected

    def cleanup(self, keep: bool = False) -> None:
        while self.restore:
            self.restore.pop()()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def arch(site, fresh_db, tmp_path, test_airflow_db):
    s = Site(site, fresh_db, tmp_path, test_airflow_db)
    try:
        yield s
    finally:  # permissions restored and moved folders put back, pass or fail
        s.cleanup()


@pytest.fixture
def loaded(arch):
    """A night loaded once, successfully: the batch every fault below must leave untouched."""
    night = sdoss_night()
    arch.publish(night)
    arch.ingest()
    before = arch.batch()
    assert [b[1] for b in before[0]] == ["loaded"] and len(before[2]) == 5
    return night, before


def fails(arch, *words: str) -> str:
    """Load again: the task fails, its log has the message; returns the message's line."""
    state, log = arch.load()
    assert state == "failed", log[-3000:]
    # The task's own failure (the last such line; the loader's error, its cause, comes first).
    text = next((line for line in reversed(log.splitlines()) if "cannot load from the archive" in line),
                log[-3000:])
    assert "AirflowFailException" in text or "AirflowException" in text, text
    for word in (f"{FRC} {NIGHT}: cannot load from the archive: ", *words):
        assert word in text, f"{word!r} not in the message:\n{text}"
    return text


def test_unreadable_results_folder_fails_and_keeps_the_batch(arch, loaded):
    night, before = loaded
    results = arch.folder("results/2024")
    arch.chmod(results, 0o000)
    text = fails(arch, f"{arch.root}/{FRC}/results/2024/", "permission denied", "AirflowFailException")
    assert "restore the permissions, then clear the 'catalogue' task" in text
    assert arch.batch() == before
    # As the message says: permissions back, the task cleared: the night loads again.
    arch.cleanup(keep=True)
    state, log = arch.load()
    assert state == "success", log[-3000:]
    assert f"({FRC} {NIGHT}): observations=4, sunspots=5; 6 file(s) loaded" in log


def test_unreadable_night_folder_fails_and_keeps_the_batch(arch, loaded):
    """chmod 000 on the FRC's folder: even the manifest cannot be read."""
    night, before = loaded
    arch.chmod(arch.root / FRC, 0o000)
    fails(arch, f"{arch.root}/{FRC}/manifests/", "permission denied")
    assert arch.batch() == before


def test_moved_file_fails_and_keeps_the_batch(arch, loaded):
    night, before = loaded
    name = "sdoss_106_20240301T002000_sdo_feat.csv"
    arch.move(arch.root / night.path_of(name))
    fails(arch, f"{arch.root}/{night.path_of(name)}", "no such file")
    assert arch.batch() == before


def test_moved_results_folder_fails_and_keeps_the_batch(arch, loaded):
    night, before = loaded
    arch.move(arch.folder("results/2024"))
    fails(arch, f"{arch.root}/{FRC}/results/2024/", "no such file")
    assert arch.batch() == before


def test_archive_copy_that_differs_from_the_manifest_fails_and_keeps_the_batch(arch, loaded):
    """The archive copy's sha256 is not the one the archive stage verified: an integrity failure
    of the archive (corrupted, overwritten, stale manifest), not a bad FRC file: fail, keep."""
    night, before = loaded
    name = "sdoss_106_20240301T000000_sdo_init.csv"
    path = arch.root / night.path_of(name)
    path.write_bytes(path.read_bytes().replace(b"2048.25", b"2048.75"))
    fails(arch, f"{arch.root}/{night.path_of(name)}", "sha256", "manifest")
    assert arch.batch() == before


class CutProxy:
    """TCP proxy to the site's sshd (own event loop thread) that cuts every connection after
    ``budget`` bytes (both directions counted); ``None``: passes everything, counting. ``budgets``:
    the budgets of the next connections, one each, before ``budget`` again."""

    def __init__(self, port: int):
        self.port, self.budget, self.seen, self.cuts = port, None, 0, 0
        self.budgets: list[int | None] = []
        self.ended = threading.Semaphore(0)  # released when a connection is over (counted, cut)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop).result(10)
        self.listen = self.server.sockets[0].getsockname()[1]

    async def _handle(self, cr, cw) -> None:
        cut, self.seen = await relay(cr, cw, self.port, self.budgets.pop(0) if self.budgets else self.budget)
        self.cuts += cut
        self.ended.release()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def proxied(arch, site):
    """A night of 62 files loaded once through a CutProxy to the archive's sshd: (proxy, the
    bytes that load took, the batch it left). The test then sets the proxy's budgets."""
    arch.publish(sdoss_night(spots=(3,) * 30))  # 62 files read after the manifest
    conn = json.loads(site["AIRFLOW_CONN_HFC_ARCHIVE"])
    proxy = CutProxy(conn["port"])
    try:
        arch.env["AIRFLOW_CONN_HFC_ARCHIVE"] = json.dumps({**conn, "port": proxy.listen})
        state, log = arch.load()
        assert state == "success", log[-3000:]
        assert f"({FRC} {NIGHT}): observations=60, sunspots=90; 62 file(s) loaded" in log
        first = arch.batch()
        assert proxy.ended.acquire(timeout=10)
        yield proxy, proxy.seen, first
    finally:
        proxy.close()


def test_connection_lost_mid_load_reconnects_and_loads_in_the_same_try(arch, proxied):
    # Before: the drop failed the try ("connection lost or SFTP failure") and spent one of its 3
    # Airflow tries; the multihost fault test (HFC_FAULT_SEED=225926311) saw a night fail all 3.
    proxy, whole, first = proxied
    # The first connection is cut among the file reads; the next one passes.
    proxy.budgets = [whole * 2 // 3]
    state, log = arch.load()
    assert state == "success", log[-3000:]
    assert proxy.cuts == 1 and "archive link lost reading" in log and "reconnect 1/5" in log
    assert f"({FRC} {NIGHT}): observations=60, sunspots=90; 62 file(s) loaded" in log
    again = arch.batch()
    # A new batch of the same night, with the same rows (the files' sha256 as the manifest's).
    assert again[0][0][0] != first[0][0][0] and again[0][0][1:3] == first[0][0][1:3]
    assert [r[1:3] for r in again[3]] == [r[1:3] for r in first[3]]
    assert (len(again[1]), len(again[2]), again[4]) == (len(first[1]), len(first[2]), first[4])


def test_archive_link_down_for_good_fails_after_its_reconnects_and_keeps_the_batch(arch, proxied):
    proxy, whole, before = proxied
    # The first connection is cut among the file reads, every later one in its SSH handshake.
    proxy.budgets, proxy.budget = [whole * 2 // 3], 200
    text = fails(arch, "(archive connection hfc_archive): connection lost or SFTP failure", "AirflowException:")
    assert proxy.cuts == 6  # the first connection and its 5 reconnects
    assert arch.batch() == before
    print(f"{whole} bytes for the whole load, cut at {whole * 2 // 3}:\n{text}")
