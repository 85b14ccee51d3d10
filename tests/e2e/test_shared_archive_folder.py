"""Issue 16 item 1 on the real site: the demo tracker archives into its detector's folder
(``archive_name: demo-sunspots``, as the production trackers do), both FRCs run for a night
through the real DAG (``airflow dags test``, as ``make demo`` does), then each catalogue is
re-loaded in turn with the operators' domain functions.

Must: one manifest per (FRC, night); each FRC's batch lists only its own files; row counts per
batch unchanged by the reloads; no sunspot loaded twice.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

import psycopg
import pytest
import yaml
from helpers import dags_test

from hfc_tasks import products
from hfc_tasks.registry import DEFAULT_REGISTRY, load_registry

pytestmark = [pytest.mark.site, pytest.mark.slow]
NIGHT = "2024-06-11"  # a night of this test only (other tests use other nights)
DETECTOR, TRACKER = "demo-sunspots", "demo-sunspot-tracking"


@pytest.fixture
def shared_registry(tmp_path) -> Path:
    raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    raw["frcs"] = [f for f in raw["frcs"] if f["name"] in (DETECTOR, TRACKER)]
    for f in raw["frcs"]:
        if f["name"] == TRACKER:
            f["archive_name"] = DETECTOR
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def reload_catalogue(registry: Path, dsn: str, frc_name: str) -> None:
    """What CatalogueLoadOperator does: this FRC's own manifest -> load_night (replace its batch)."""
    from hfc_tasks.catalogue import load_night
    from hfc_tasks.manifest import find as find_manifest
    from hfc_tasks.provider.hooks import sftp_session

    reg = load_registry(registry)
    frc, site = reg.frc(frc_name), reg.site()
    night = products.parse_night(NIGHT)
    with sftp_session(site.archive_conn_id) as sftp:
        _, raw = find_manifest(sftp, site.archive_root, frc.name, frc.archive_dir, night)

        def read_file(archive_path: str) -> bytes:
            with sftp.open(posixpath.join(site.archive_root, archive_path), "rb") as f:
                return f.read()

        with psycopg.connect(dsn) as conn:
            report = load_night(conn, json.loads(raw), read_file, manifest_sha256=hashlib.sha256(raw).hexdigest(),
                                products=frc.products or None)
    assert report.ok, report.summary()


def state(dsn: str) -> dict:
    """Per FRC: its batch's files and row counts (recorded and counted), and the night's sunspots."""
    out: dict = {}
    with psycopg.connect(dsn) as conn:
        for frc, batch_id, row_counts in conn.execute(
                "select frc, id, row_counts from hfc.batch where night = %s order by frc", (NIGHT,)).fetchall():
            files = [r[0] for r in conn.execute(
                "select name from hfc.batch_file where batch_id = %s order by name", (batch_id,))]
            counted = {t: conn.execute(f"select count(*) from hfc.{t} where batch_id = %s", (batch_id,)).fetchone()[0]
                       for t in ("observations", "sunspots", "sunspots_tracking")}
            out[frc] = {"files": files, "row_counts": row_counts, "rows": counted}
        # A sunspot is one spot of one feat file: the same spot twice would repeat (file, position).
        out["sunspots"] = conn.execute(
            "select count(*), count(distinct (s.feat_filename, s.feat_x_pix, s.feat_y_pix, s.feat_carr_long_deg)) "
            "from hfc.sunspots s join hfc.batch b on b.id = s.batch_id where b.night = %s", (NIGHT,)).fetchone()
    return out


def test_detector_and_tracker_in_one_folder_keep_their_own_manifests_and_batches(
        site, airflow_db, fresh_db, shared_registry):
    reg = load_registry(shared_registry)
    site_cfg = reg.site()
    night = products.parse_night(NIGHT)
    dags_test(NIGHT, shared_registry, fresh_db)

    root = Path(site_cfg.archive_root)
    manifests = {name: json.loads((root / products.manifest_relpath(DETECTOR, name, night)).read_text())
                 for name in (DETECTOR, TRACKER)}
    det_files = {f["name"] for f in manifests[DETECTOR]["files"]}
    trk_files = {f["name"] for f in manifests[TRACKER]["files"]}
    assert manifests[DETECTOR]["frc"] == DETECTOR and manifests[TRACKER]["frc"] == TRACKER
    assert det_files and all(n.startswith("demosunspots_") or n.endswith(".jpg") for n in det_files)
    assert trk_files and all(n.startswith("demosunspottracking_") for n in trk_files)
    assert all(f["archive_path"].startswith(f"{DETECTOR}/") for m in manifests.values() for f in m["files"])
    expected_spots = 0
    for entry in manifests[DETECTOR]["files"]:
        if entry["kind"] == "feat":
            data = (root / entry["archive_path"]).read_text()
            expected_spots += len(data.strip().splitlines()) - 1

    first = state(fresh_db)
    assert first[DETECTOR]["files"] == sorted(det_files)
    assert first[TRACKER]["files"] == sorted(trk_files)
    assert first[DETECTOR]["rows"]["sunspots"] == expected_spots > 0
    assert first[TRACKER]["rows"]["sunspots"] == 0 and first[TRACKER]["rows"]["observations"] == 0
    assert first[TRACKER]["rows"]["sunspots_tracking"] == expected_spots
    assert first["sunspots"] == (expected_spots, expected_spots), "a sunspot loaded twice"

    # Reload the tracker's catalogue, then the detector's and the tracker's again (the detector's
    # reload cascades to the tracking rows that point at its sunspots, as in V12; the tracker's
    # reload brings them back): every batch ends with the same files and rows.
    reload_catalogue(shared_registry, fresh_db, TRACKER)
    assert state(fresh_db) == first
    reload_catalogue(shared_registry, fresh_db, DETECTOR)
    after_detector = state(fresh_db)
    assert after_detector[DETECTOR] == first[DETECTOR] and after_detector["sunspots"] == first["sunspots"]
    assert after_detector[TRACKER]["files"] == first[TRACKER]["files"]
    reload_catalogue(shared_registry, fresh_db, TRACKER)
    assert state(fresh_db) == first

    # The whole night again through the DAG (new jobs): nothing changes.
    dags_test(NIGHT, shared_registry, fresh_db)
    assert state(fresh_db) == first
