"""The catalogue loader against a real PostgreSQL (fixture ``fresh_db`` from tests/conftest.py).

A small SDOSS night is built in memory (bytes in a dict standing for the archive) with the real
SDOSS metadata files from tests/data/hfc_samples, and loaded through ``load_night``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

import psycopg
import pytest
from catalogue_files import (
    ARCHIVE_URL,
    FEAT_COLUMNS,
    SAMPLES,
    SDOSS_FEAT,
    Archive,
    init_csv,
    quicklook_name,
    values_for,
)
from catalogue_files import stamp as _stamp

from hfc_tasks.catalogue import ArchiveReadError, copying, load_night, schema, upgrade

pytestmark = pytest.mark.site

FRC = "sdoss"


def feat_values(t: dt.datetime, n: int, file: str) -> list[dict]:
    return [values_for(SDOSS_FEAT, k, t, ID_SUNSPOT=k, FRC_INFO_ID=1, OBSERVATIONS_ID_IC=1, OBSERVATIONS_ID_M=2,
                       SNAPSHOT_PATH="http://snap/", SNAPSHOT_FN=f"snap_{_stamp(t)}_{k}.png", FEAT_FILENAME=file,
                       FEAT_TOT_BZ="NULL")
            for k in range(1, n + 1)]


def feat_csv(rows: list[dict], columns=None) -> bytes:
    columns = columns or list(reversed(FEAT_COLUMNS))  # an unusual order: read by name
    lines = [";".join(columns)] + [";".join(str(r[c]) for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


class Night(Archive):
    """An SDOSS night: metadata samples, init + feat + quicklook per observation."""

    def __init__(self, night: dt.date, spots=(3, 2)):
        super().__init__(FRC, night, "sdoss", instrument_path="SDO/HMI")
        self.extra = {
            "frc_version": "1.0.6",
            "slurm_job_id": "4242",
            "archive_root": "/archive",
            "created": f"{night + dt.timedelta(days=1)}T00:05:00Z",
        }
        self.sample("sdoss_106_frc_info.csv", "frc_info")
        self.sample("sdoss_106_observatory.csv", "observatory")
        for i, n in enumerate(spots):
            t = dt.datetime.combine(night, dt.time(2 * i))
            stem = f"sdoss_106_{_stamp(t)}_sdo"
            self.add(f"{stem}_init.csv", "init", init_csv(t))
            self.add(f"{stem}_feat.csv", "feat", feat_csv(feat_values(t, n, f"{stem}_feat.csv")))
            self.add(quicklook_name(t), "quicklook", b"\xff\xd8 jpeg " + stem.encode())

    def load(self, conn, **kw):
        # No commit here, unlike Archive.load: these tests look at the connection's own state.
        return load_night(conn, self.manifest, self.read, **kw)


NIGHT1 = dt.date(2024, 3, 1)
NIGHT2 = dt.date(2024, 3, 2)


@pytest.fixture
def conn(fresh_db):
    with psycopg.connect(fresh_db) as c:
        yield c


def counts(conn, night: dt.date | None = None) -> dict[str, int]:
    where, args = ("where b.night = %s", (night,)) if night else ("", ())
    out = {}
    for table in ("observations", "sunspots"):
        out[table] = conn.execute(
            f"select count(*) from hfc.{table} t join hfc.batch b on b.id = t.batch_id {where}", args
        ).fetchone()[0]
    for table in ("observatory", "frc_info", "batch"):
        out[table] = conn.execute(f"select count(*) from hfc.{table}").fetchone()[0]
    conn.commit()
    return out


def test_load_a_night_into_view_sp_hqi(conn):
    night = Night(NIGHT1)
    report = night.load(conn, dag_run_id="scheduled__2024-03-02", task_try=1)
    assert report.ok, report.summary()
    assert report.rows == {"observations": 4, "sunspots": 5}
    assert report.metadata_new == {"observatory": 2, "frc_info": 1}
    # Migrations are a deploy step (the fixture's), never a load's: it ran against the current schema.
    assert report.schema_version == schema.migrations()[-1].version
    assert report.to_dict()["schema_version"] == report.schema_version
    assert len(report.files_loaded) == 6
    assert report.warnings == []

    cur = conn.execute("select * from hfc.view_sp_hqi order by date_obs, feat_x_pix")
    names = [d.name for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert len(names) == 118
    assert names[:3] == ["institut", "code", "version"] and names[-1] == "snapshot"
    assert "batch_id" not in names
    assert len(rows) == 5
    first = rows[0]
    assert (first["institut"], first["code"], first["version"], first["feature_name"]) == (
        "MSSL",
        "SDOSS",
        "1.06",
        "SUNSPOTS",
    )
    assert (first["observat"], first["instrume"], first["telescop"]) == ("SDO", "HMI", "Continuum")
    assert first["spectral_name"] == "Visible" and first["wavemin"] == 617.133
    assert first["date_obs"] == dt.datetime(2024, 3, 1, 0, 0)
    assert first["date_end"] == dt.datetime(2024, 3, 1, 0, 0, 45)
    assert first["cdelt1"] == 0.504 and first["naxis1"] == 4096 and first["file_format"] == "FITS"
    assert first["feat_x_pix"] == 11 and first["feat_area_deg2"] == 1.25 and first["feat_tot_bz"] is None
    assert first["rs"] == "rs1" and first["snapshot"] == "http://snap/snap_20240301T000000_1.png"
    assert first["noaa_number"] is None
    for row in rows:
        ql = quicklook_name(row["date_obs"])
        assert row["qclk_fname"] == ql
        assert row["qclk_url"] + "/" + row["qclk_fname"] == f"{ARCHIVE_URL}/{night.path_of(ql)}"
    # The magnetogram observation (no quicklook) keeps a NULL url; sunspots point at it by _M.
    m = conn.execute(
        "select o.qclk_url, o.qclk_fname, count(s.*) from hfc.observations o "
        "join hfc.sunspots s on s.observations_id_m = o.id_observations "
        "group by 1, 2"
    ).fetchall()
    assert m == [(None, None, 5)]
    batch = conn.execute(
        "select frc, night, slurm_job_id, dag_run_id, task_try, frc_version, status, row_counts,"
        " finished_at is not null from hfc.batch"
    ).fetchone()
    assert batch == (
        "sdoss",
        NIGHT1,
        "4242",
        "scheduled__2024-03-02",
        1,
        "1.0.6",
        "loaded",
        {"observations": 4, "sunspots": 5},
        True,
    )


def test_provenance_row_to_file_job_run_and_version(conn):
    night = Night(NIGHT1)
    night.load(conn, dag_run_id="manual__1", task_try=2)
    row = conn.execute(
        """
        select s.id_sunspot, f.name, f.sha256, b.slurm_job_id, b.dag_run_id, b.task_try, b.frc_version
        from hfc.sunspots s
        join hfc.batch b on b.id = s.batch_id
        join hfc.batch_file f on f.batch_id = b.id and f.name = s.feat_filename
        order by s.id_sunspot limit 1
        """
    ).fetchone()
    name = "sdoss_106_20240301T000000_sdo_feat.csv"
    assert row[1:] == (
        name,
        hashlib.sha256(night.read(night.path_of(name))).hexdigest(),
        "4242",
        "manual__1",
        2,
        "1.0.6",
    )


def test_reload_same_counts_and_other_night_untouched(conn):
    other = Night(NIGHT2, spots=(4,))
    other.load(conn)
    conn.commit()
    other_rows = conn.execute(
        "select o.id_observations, s.id_sunspot from hfc.observations o "
        "join hfc.sunspots s on s.observations_id_ic = o.id_observations order by 1, 2"
    ).fetchall()
    night = Night(NIGHT1)
    seen = []
    for _ in range(3):
        report = night.load(conn)
        assert report.ok
        seen.append((report.rows, counts(conn, NIGHT1)))
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][1] == {"observations": 4, "sunspots": 5, "observatory": 2, "frc_info": 1, "batch": 2}
    assert (
        conn.execute(
            "select o.id_observations, s.id_sunspot from hfc.observations o "
            "join hfc.sunspots s on s.observations_id_ic = o.id_observations "
            "join hfc.batch b on b.id = o.batch_id where b.night = %s order by 1, 2",
            (NIGHT2,),
        ).fetchall()
        == other_rows
    )
    assert conn.execute("select count(*) from hfc.batch_file").fetchone()[0] == 8 + 5


def test_ids_deterministic_for_same_input(conn):
    night = Night(NIGHT1)
    night.load(conn)
    q = (
        "select o.filename, o.id_observations - min(o.id_observations) over (), "
        "s.feat_x_pix, s.id_sunspot - min(s.id_sunspot) over () "
        "from hfc.sunspots s join hfc.observations o on o.id_observations = s.observations_id_ic order by 2, 4"
    )
    first = conn.execute(q).fetchall()
    night.load(conn)
    assert conn.execute(q).fetchall() == first


def test_bad_number_and_bad_date_are_rejected_good_files_load(conn):
    night = Night(NIGHT1, spots=(3, 2, 1))
    # Feat 1: a row with two fields.
    feat1 = "sdoss_106_20240301T000000_sdo_feat.csv"
    night.replace(feat1, night.read(night.path_of(feat1)) + b"garbage;1\n")
    # Feat 2: a bad number on its third line (second sunspot), in a manifest-consistent file.
    feat2 = "sdoss_106_20240301T020000_sdo_feat.csv"
    t2 = dt.datetime(2024, 3, 1, 2)
    rows = feat_values(t2, 2, feat2)
    rows[1]["FEAT_AREA_DEG2"] = "12.5x"
    night.replace(feat2, feat_csv(rows))
    # Init 3: an impossible date: its feat is skipped with it.
    init3 = "sdoss_106_20240301T040000_sdo_init.csv"
    night.replace(init3, night.read(night.path_of(init3)).replace(b"2024-03-01T04:00:00;", b"2024-02-30T04:00:00;", 1))

    report = night.load(conn)
    assert not report.ok
    by_file = {r.file: r for r in report.rejected}
    assert set(report.rejected_files) == {feat1, feat2, init3, init3.replace("init", "feat")}
    assert by_file[feat1].line == 5  # the garbage line
    assert (by_file[feat2].line, by_file[feat2].column) == (3, "FEAT_AREA_DEG2")
    assert "not a number" in by_file[feat2].reason and "12.5x" in by_file[feat2].reason
    assert (by_file[init3].line, by_file[init3].column) == (2, "DATE_OBS")
    assert "impossible date" in by_file[init3].reason
    assert "was rejected" in by_file[init3.replace("init", "feat")].reason
    # The good files loaded: two init files (4 observations), no sunspots (both feats bad).
    assert report.rows == {"observations": 4, "sunspots": 0}
    stored = conn.execute(
        "select file, line, column_name, reason from hfc.rejected_file order by file, line"
    ).fetchall()
    assert (feat2, 3, "FEAT_AREA_DEG2") in [r[:3] for r in stored]
    assert conn.execute("select status from hfc.batch").fetchone()[0] == "partial"
    assert conn.execute("select rows from hfc.batch_file where name = %s", (feat2,)).fetchone()[0] is None


@pytest.mark.parametrize("fault", ["moved", "permission", "altered", "connection"])
def test_archive_fault_raises_names_the_file_and_keeps_the_previous_batch(conn, fault):
    """Issue 16 item 4: an archive that cannot be read, or a file whose bytes are not those the
    manifest recorded, is not a per-file rejection: nothing is loaded, the batch stays."""
    Night(NIGHT1).load(conn)
    conn.commit()
    before = conn.execute("select id, status, row_counts from hfc.batch").fetchall()
    spots = conn.execute("select id_sunspot, feat_x_pix from hfc.sunspots order by 1").fetchall()
    conn.commit()
    night = Night(NIGHT1, spots=(4, 4))
    name = "sdoss_106_20240301T020000_sdo_feat.csv"
    path = night.path_of(name)
    causes = {"moved": FileNotFoundError(2, "No such file"), "permission": PermissionError(13, "Permission denied"),
              "connection": EOFError("Server connection dropped")}

    def read(p: str) -> bytes:
        if p == path and fault in causes:
            raise causes[fault]
        return night.read(p) + (b"x" if p == path else b"")

    with pytest.raises(ArchiveReadError) as err:
        load_night(conn, night.manifest, read)
    conn.rollback()
    text = str(err.value)
    assert text.startswith(f"sdoss {NIGHT1}: cannot load from the archive: {path}: ")
    assert "the previous batch of sdoss 2024-03-01 is kept unchanged" in text
    words = {"moved": "no such file", "permission": "permission denied", "altered": "the manifest says",
             "connection": "connection lost or SFTP failure"}
    assert words[fault] in text
    assert err.value.transient == (fault == "connection")
    assert conn.execute("select id, status, row_counts from hfc.batch").fetchall() == before
    assert conn.execute("select id_sunspot, feat_x_pix from hfc.sunspots order by 1").fetchall() == spots
    assert conn.execute("select count(*) from hfc.rejected_file").fetchone() == (0,)


def test_a_bug_in_the_reader_is_not_taken_for_an_archive_fault(conn):
    night = Night(NIGHT1)

    def read(p: str) -> bytes:
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        load_night(conn, night.manifest, read)


def test_feat_pointing_at_unknown_observation_is_rejected(conn):
    night = Night(NIGHT1, spots=(2,))
    name = "sdoss_106_20240301T000000_sdo_feat.csv"
    rows = feat_values(dt.datetime(2024, 3, 1), 2, name)
    rows[0]["OBSERVATIONS_ID_IC"] = 7
    night.replace(name, feat_csv(rows))
    report = night.load(conn)
    assert [(r.file, r.line, r.column) for r in report.rejected] == [(name, 2, "OBSERVATIONS_ID_IC")]
    assert report.rows == {"observations": 2, "sunspots": 0}


def test_failure_mid_load_keeps_previous_batch(conn, monkeypatch):
    night = Night(NIGHT1)
    first = night.load(conn)
    before = counts(conn)

    real_copy = copying.copy_lines

    def copy_then_fail(cur, table, *args):
        real_copy(cur, table, *args)
        if table == "sunspots":
            raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(copying, "copy_lines", copy_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        Night(NIGHT1, spots=(7, 7, 7)).load(conn)
    assert counts(conn) == before
    assert conn.execute("select id from hfc.batch").fetchone()[0] == first.batch_id


def test_night_without_detections_and_empty_night(conn):
    night = Night(NIGHT1)
    night.load(conn)
    quiet = Night(NIGHT1)
    quiet.entries = [e for e in quiet.entries if e["kind"] != "feat"]
    report = quiet.load(conn)
    assert report.ok and report.rows == {"observations": 4, "sunspots": 0}
    empty = Night(NIGHT1)
    empty.entries = []
    report = empty.load(conn)
    assert report.ok and report.rows == {"observations": 0, "sunspots": 0}
    assert counts(conn, NIGHT1)["observations"] == 0
    # A manifest without files: the job ran and wrote nothing, a night without data (issue 16 item 6).
    assert conn.execute("select count(*), min(status) from hfc.batch").fetchone() == (1, "no_data")


def test_metadata_matched_by_content_not_local_id(conn):
    Night(NIGHT1).load(conn)
    # Same instruments, local ids swapped in the file: must map to the same catalogue rows.
    night = Night(NIGHT2, spots=(1,))
    lines = (SAMPLES / "sdoss_106_observatory.csv").read_bytes().split(b"\r\n")
    lines[1], lines[2] = lines[2].replace(b"2;", b"1;", 1), lines[1].replace(b"1;", b"2;", 1)
    night.replace("sdoss_106_observatory.csv", b"\r\n".join(lines))
    init = "sdoss_106_20240302T000000_sdo_init.csv"
    data = night.read(night.path_of(init)).split(b"\r\n")
    data[1] = data[1].replace(b"1;1;", b"1;2;", 1)
    data[2] = data[2].replace(b"2;2;", b"2;1;", 1)
    night.replace(init, b"\r\n".join(data))
    report = night.load(conn)
    assert report.ok and report.metadata_new == {"observatory": 0, "frc_info": 0}
    telescopes = conn.execute("select distinct telescop from hfc.view_sp_hqi where date_obs >= '2024-03-02'").fetchall()
    assert telescopes == [("Continuum",)]


def test_upgrade_is_recorded_idempotent_and_serialised(empty_db):
    results = []

    def run():
        with psycopg.connect(empty_db) as c:
            results.append(upgrade(c))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shipped = [m.version for m in schema.migrations()]
    assert sorted(results) == [[], [], shipped]
    with psycopg.connect(empty_db) as c:
        assert upgrade(c) == []
        recorded = c.execute("select version, sha256 from hfc.schema_migrations order by version").fetchall()
        assert [v for v, _ in recorded] == shipped and all(len(sha) == 64 for _, sha in recorded)
        tables = {
            r[0] for r in c.execute("select table_name from information_schema.tables where table_schema = 'hfc'")
        }
    assert {
        "observatory",
        "frc_info",
        "observations",
        "sunspots",
        "noaa",
        "noaa_sp",
        "batch",
        "batch_file",
        "rejected_file",
        "schema_migrations",
        "view_sp_hqi",
    } <= tables


def test_deleting_a_batch_cascades_but_metadata_stays(conn):
    Night(NIGHT1).load(conn)
    conn.execute("insert into hfc.noaa (noaa_number, date_obs) values (13590, '2024-03-01')")
    conn.execute("insert into hfc.noaa_sp select 1, min(id_sunspot) from hfc.sunspots")
    assert conn.execute("select count(*) from hfc.view_sp_hqi where noaa_number = 13590").fetchone()[0] == 1
    conn.execute("delete from hfc.batch")
    assert counts(conn) == {"observations": 0, "sunspots": 0, "observatory": 2, "frc_info": 1, "batch": 0}
    assert conn.execute("select count(*) from hfc.noaa_sp").fetchone()[0] == 0
    assert conn.execute("select count(*) from hfc.batch_file").fetchone()[0] == 0
