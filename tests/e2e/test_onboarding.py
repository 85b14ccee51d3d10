"""Issue 13 on the real site: two made-up codes onboarded by configuration only (a site formats
folder beside the registry and a registry entry each; no Python in hfc_tasks), run for one night
through the real DAG (``airflow dags test``: submit, wait, archive, catalogue; real SLURM, sshd
and PostgreSQL).

- ``ppspots`` (tests/e2e/onboarding/ppspots.py, formats.d/ppspots.yaml): sunspots with a
  pre-processing step: its per-code ``ppspots_12_hmi_pp_info.csv`` (PP_INFO) and a per-observation
  ``..._ppout.csv`` (PP_OUTPUT) beside the SDOSS-shaped observatory/frc_info/init/feat files and a
  quicklook; two file kinds the presets do not declare.
- ``nrhsrc`` (onboarding/nrhsrc.py, formats.d/nrhsrc.yaml): radio sources, filling RADIOSOURCES,
  a table no preset loads.

Must: ``hfc config validate`` accepts the registry; both nights succeed; every file the scripts
wrote is on the archive, listed in the FRC's manifest with its kind and sha256 (the bytes of a
local run of the same script); the batches are ``loaded`` and clean; the users' views
(VIEW_PP_HQI, VIEW_SP_HQI, VIEW_RS_HQI) and PP_INFO / PP_OUTPUT / RADIOSOURCES hold exactly the
values the scripts wrote; the packaged formats.yaml is unchanged and knows none of it.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml
from helpers import REPO, dags_test

from hfc_tasks import products
from hfc_tasks.catalogue.formats import FORMATS_FILE, load_formats
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.registry import DEFAULT_REGISTRY, load_registry

pytestmark = [pytest.mark.site, pytest.mark.slow]
NIGHT = "2024-06-13"  # a night of this test only
START = f"{NIGHT}T00:00:00"
HERE = Path(__file__).resolve().parent / "onboarding"
PP, RS = "ppspots", "nrhsrc"
NULLS = ("", "NULL", "\\N")

# The registry entries an operator adds (the programs installed under the site's frc_root).
FRCS = [
    {"name": PP, "version": "1.2", "feature": "SUNSPOTS", "observatory": "SDO", "instrument": "HMI",
     "product_format": PP, "sites": ["local"], "slurm": {"time": "00:02:00", "mem": "64M"},
     "command": "/usr/bin/python3 {frc_root}/onboarding/ppspots.py -s {start} -o {run_dir}"},
    {"name": RS, "version": "0.9", "feature": "RADIO SOURCES", "observatory": "Nancay", "instrument": "NRH",
     "product_format": RS, "sites": ["local"], "slurm": {"time": "00:02:00", "mem": "64M"},
     "command": "/usr/bin/python3 {frc_root}/onboarding/nrhsrc.py -s {start} -o {run_dir}"},
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _clean(site_cfg) -> None:
    shutil.rmtree(Path(site_cfg.frc_root) / "onboarding", ignore_errors=True)
    for name in (PP, RS):
        shutil.rmtree(Path(site_cfg.archive_root) / name, ignore_errors=True)
        shutil.rmtree(Path(site_cfg.products_root) / name, ignore_errors=True)


@pytest.fixture
def onboarded(site, tmp_path) -> Path:
    """The operator's path: the site formats folder beside the registry (formats_dir), the two
    registry entries, the two programs installed under the site's frc_root, readable by the
    cluster account."""
    shutil.copytree(HERE / "formats.d", tmp_path / "formats.d")
    raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    raw["formats_dir"] = "formats.d"
    raw["frcs"] = FRCS
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    site_cfg = load_registry(path).site()
    _clean(site_cfg)
    installed = Path(site_cfg.frc_root) / "onboarding"
    installed.mkdir(mode=0o755)
    for script in ("ppspots.py", "nrhsrc.py"):
        shutil.copy(HERE / script, installed / script)
        os.chmod(installed / script, 0o755)
    yield path
    _clean(site_cfg)


def read_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=";"))


def same(db, text: str) -> bool:
    """A catalogue value against the text the code wrote for it."""
    if text in NULLS:
        return db is None
    if isinstance(db, float):
        return db == pytest.approx(float(text), rel=1e-6)
    if isinstance(db, int):
        return db == int(text)
    if isinstance(db, dt.datetime):
        return db == dt.datetime.fromisoformat(text)
    return db == text


def local_ids(row: dict[str, str]) -> dict[str, str]:
    """The columns of a row that are catalogue values (not file-local ids or references to them)."""
    return {k: v for k, v in row.items() if not (k.startswith("ID_") or "_ID" in k)}


def compare(where: str, db_row: dict, expected: dict[str, str], skip: tuple[str, ...] = ()) -> int:
    """Every expected column the row has (by lower-cased name) equals; returns how many were compared."""
    compared, wrong = 0, []
    for name, text in expected.items():
        column = name.lower()
        if column in skip or column not in db_row:
            continue
        compared += 1
        if not same(db_row[column], text):
            wrong.append(f"{name}: catalogue {db_row[column]!r}, file {text!r}")
    assert not wrong, f"{where}: " + "; ".join(wrong)
    return compared


def query(conn, sql: str, *args) -> list[dict]:
    cur = conn.execute(sql, args)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def by_position(rows: list[dict]) -> dict[tuple[int, int], dict]:
    return {(r["feat_x_pix"], r["feat_y_pix"]): r for r in rows}


def test_two_codes_onboarded_by_configuration_only(onboarded, airflow_db, fresh_db, tmp_path):
    presets_before = FORMATS_FILE.read_bytes()
    reg = load_registry(onboarded)
    site_cfg = reg.site()
    night = products.parse_night(NIGHT)

    # 1. The operator's check of the configuration.
    hfc = Path(sys.executable).with_name("hfc")
    check = subprocess.run([str(hfc), "--registry", str(onboarded), "config", "validate"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 file(s): nrhsrc.yaml, ppspots.yaml" in check.stdout
    assert "pp_info->pp_info" in check.stdout and "ppout->pp_output" in check.stdout
    assert "feat->radiosources" in check.stdout

    # 2. The night, through the DAG (submit, wait, archive, catalogue of each FRC).
    dags_test(NIGHT, onboarded, dsn=fresh_db)

    # What the scripts write for this night, run again here: the same bytes (no clock in them).
    wrote: dict[str, dict[str, bytes]] = {}
    for frc, script in ((PP, "ppspots.py"), (RS, "nrhsrc.py")):
        out = tmp_path / "expected" / frc
        out.mkdir(parents=True)
        subprocess.run(["/usr/bin/python3", str(HERE / script), "-s", START, "-o", str(out)], check=True)
        wrote[frc] = {p.name: p.read_bytes() for p in out.iterdir()}
    stem_pp, stem_rs = "ppspots_12_20240613T000000_hmi", "nrhsrc_09_20240613T120000_nrh"
    assert set(wrote[PP]) == {"ppspots_12_hmi_observatory.csv", "ppspots_12_hmi_frc_info.csv",
                              "ppspots_12_hmi_pp_info.csv", f"{stem_pp}_init.csv", f"{stem_pp}_feat.csv",
                              f"{stem_pp}_ppout.csv", f"{stem_pp}.jpg"}
    assert set(wrote[RS]) == {"nrhsrc_09_nrh_observatory.csv", "nrhsrc_09_nrh_frc_info.csv",
                              f"{stem_rs}_init.csv", f"{stem_rs}_feat.csv"}

    # 3. The archive: each FRC's manifest lists exactly its files, with their kinds (the site's
    # formats classify them) and the sha256 of the bytes the script wrote; the copies match.
    root = Path(site_cfg.archive_root)
    manifests = {}
    for frc in (PP, RS):
        path = root / products.manifest_relpath(frc, frc, night)
        manifest = json.loads(path.read_text())
        manifests[frc] = manifest
        assert manifest["frc"] == frc and manifest["product_format"] == frc and manifest["slurm_job_id"]
        assert "unmatched" not in manifest and "no_data" not in manifest and "stale" not in manifest
        entries = {e["name"]: e for e in manifest["files"]}
        assert set(entries) == set(wrote[frc])
        for name, entry in entries.items():
            assert entry["kind"] == reg.formats.classify(name).kind, name
            assert entry["sha256"] == sha256(wrote[frc][name]), f"{name}: manifest sha256 is not the script's bytes"
            assert sha256((root / entry["archive_path"]).read_bytes()) == entry["sha256"], entry["archive_path"]
        # Where the site's own kinds are filed: beside the others, under results/<year>/.
        if frc == PP:
            pp_info_entry = entries["ppspots_12_hmi_pp_info.csv"]
            assert pp_info_entry["kind"] == "pp_info"
            assert pp_info_entry["archive_path"] == "ppspots/results/2024/ppspots_12_hmi_pp_info.csv"
            assert entries[f"{stem_pp}_ppout.csv"]["kind"] == "ppout"
            assert entries[f"{stem_pp}_ppout.csv"]["archive_path"] == f"ppspots/results/2024/{stem_pp}_ppout.csv"
            assert entries[f"{stem_pp}.jpg"]["archive_path"] == f"ppspots/images/full/SDO/HMI/2024/{stem_pp}.jpg"
        # SLURM ran the program as the FRC's job, and it ended well.
        state = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", manifest["slurm_job_id"], "-o", "State,ExitCode"],
            capture_output=True, text=True, check=True, env={**os.environ, "SLURM_CONF": str(slurm_conf_path())},
        ).stdout.strip()
        assert state.splitlines()[-1] == "COMPLETED|0:0", (frc, state)
        run_dir = Path(products.run_dir(site_cfg.products_root, frc, night))
        assert [p.name for p in run_dir.iterdir() if not p.name.endswith(".out")] == [], "products left on the cluster"

    rows = {frc: {name: read_rows(data) for name, data in files.items() if name.endswith(".csv")}
            for frc, files in wrote.items()}
    pp_obs, pp_init = rows[PP]["ppspots_12_hmi_observatory.csv"][0], rows[PP][f"{stem_pp}_init.csv"][0]
    pp_frc, pp_info = rows[PP]["ppspots_12_hmi_frc_info.csv"][0], rows[PP]["ppspots_12_hmi_pp_info.csv"][0]
    (ppout,) = rows[PP][f"{stem_pp}_ppout.csv"]
    spots = rows[PP][f"{stem_pp}_feat.csv"]
    rs_obs, rs_init = rows[RS]["nrhsrc_09_nrh_observatory.csv"][0], rows[RS][f"{stem_rs}_init.csv"][0]
    rs_frc, sources = rows[RS]["nrhsrc_09_nrh_frc_info.csv"][0], rows[RS][f"{stem_rs}_feat.csv"]
    assert len(spots) == 2 and len(sources) == 2

    def observation(observatory: dict, init: dict) -> dict:
        """The observatory and observation columns of a view row (SPECTRAL_DOMAIN is spectral_name;
        QCLK_URL is the archive's, checked on its own)."""
        out = {("SPECTRAL_NAME" if k == "SPECTRAL_DOMAIN" else k): v for k, v in local_ids(observatory).items()}
        return {**out, **local_ids(init)}

    with psycopg.connect(fresh_db) as conn:
        # 4. The batches: loaded, clean, from these manifests and jobs.
        batches = {r["frc"]: r for r in query(conn, "select * from hfc.batch where night = %s", night)}
        assert set(batches) == {PP, RS}
        for frc, batch in batches.items():
            assert (batch["status"], batch["issues"]) == ("loaded", []), (frc, batch)
            assert batch["slurm_job_id"] == manifests[frc]["slurm_job_id"]
            manifest_bytes = (root / products.manifest_relpath(frc, frc, night)).read_bytes()
            assert batch["manifest_sha256"] == sha256(manifest_bytes)
        assert {k: v for k, v in batches[PP]["row_counts"].items() if v} == \
            {"observations": 1, "sunspots": 2, "pp_output": 1}
        assert {k: v for k, v in batches[RS]["row_counts"].items() if v} == {"observations": 1, "radiosources": 2}

        # 5a. ppspots: the cleaned image in VIEW_PP_HQI (observation columns from init, the image
        # geometry from ppout), the whole PP_OUTPUT row, its PP_INFO row matched by content.
        (view_pp,) = query(conn, "select * from hfc.view_pp_hqi where filename = %s", pp_init["FILENAME"])
        from_pp = ("CDELT1", "CDELT2", "NAXIS1", "NAXIS2", "CENTER_X", "CENTER_Y", "R_SUN")
        assert any(ppout[c] != pp_init[c] for c in from_pp), "the cleaned image must differ from the observation"
        expected = {**observation(pp_obs, pp_init), **{c: ppout[c] for c in from_pp}}
        assert compare("view_pp_hqi", view_pp, expected, skip=("qclk_url",)) == 31  # all but qclk_url
        (stored_pp,) = query(conn, "select * from hfc.pp_output")
        assert compare("pp_output", stored_pp, local_ids(ppout)) == 31
        assert stored_pp["src_file"] == f"{stem_pp}_ppout.csv"
        (info,) = query(conn, "select * from hfc.pp_info")
        assert compare("pp_info", info, local_ids(pp_info)) == 6
        assert stored_pp["pp_info_id"] == info["id_pp_info"]
        (obs_id,) = conn.execute("select id_observations from hfc.observations where filename = %s",
                                 (pp_init["FILENAME"],)).fetchone()
        assert stored_pp["observations_id"] == obs_id

        # 5b. ppspots: its sunspots in VIEW_SP_HQI, with its frc_info and observation; the
        # quicklook URL is the archive's (and it opens).
        view_sp = by_position(query(conn, "select * from hfc.view_sp_hqi where code = %s", PP))
        assert len(view_sp) == 2
        for spot in spots:
            got = view_sp[(int(spot["FEAT_X_PIX"]), int(spot["FEAT_Y_PIX"]))]
            expected = {**local_ids(pp_frc), **observation(pp_obs, pp_init), **local_ids(spot)}
            assert compare("view_sp_hqi", got, expected, skip=("qclk_url",)) == 114  # all but ids, NOAA, snapshot
            quicklook = next(e for e in manifests[PP]["files"] if e["kind"] == "quicklook")
            assert (got["qclk_url"], got["qclk_fname"]) == (quicklook["url_base"], f"{stem_pp}.jpg")
        with urllib.request.urlopen(f"{quicklook['url_base']}/{stem_pp}.jpg", timeout=30) as resp:
            assert resp.read() == wrote[PP][f"{stem_pp}.jpg"]

        # 5c. nrhsrc: its radio sources in VIEW_RS_HQI; FEAT_FILENAME (left empty) is the file's name.
        view_rs = by_position(query(conn, "select * from hfc.view_rs_hqi where code = %s", RS))
        assert len(view_rs) == 2
        for src in sources:
            got = view_rs[(int(src["FEAT_X_PIX"]), int(src["FEAT_Y_PIX"]))]
            expected = {**local_ids(rs_frc), **observation(rs_obs, rs_init), **local_ids(src)}
            assert compare("view_rs_hqi", got, expected) == 93  # all but id_rs, snapshot
        stored_rs = query(conn, "select * from hfc.radiosources")
        assert {r["feat_filename"] for r in stored_rs} == {f"{stem_rs}_feat.csv"}
        assert sorted(r["local_id"] for r in stored_rs) == [1, 2]

    # 6. The packaged presets were not touched and know none of this: it is all the site's.
    assert FORMATS_FILE.read_bytes() == presets_before
    presets = load_formats()
    assert PP not in presets.formats and RS not in presets.formats
    assert {"pp_info", "ppout"}.isdisjoint(presets.files) and "nrhsrc_feat" not in presets.kinds
