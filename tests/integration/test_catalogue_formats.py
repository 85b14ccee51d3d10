"""Round trip of every HFC product format: files in the shapes the codes write -> rows in the
users' views (VIEW_*_HQI), with ids remapped and tracking files resolved."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from catalogue_files import Archive, csv_bytes, header_of, iso, stamp, values_for

from hfc_tasks.catalogue import formats

pytestmark = pytest.mark.site

N1 = dt.date(2024, 3, 1)
N2 = dt.date(2024, 3, 2)
T1 = dt.datetime(2024, 3, 1, 6, 0, 0)
KINDS = formats.KNOWN.kinds

SDOSS_INIT = (
    "ID_OBSERVATIONS;OBSERVATORY_ID;DATE_OBS;DATE_END;JDINT;JDFRAC;EXP_TIME;C_ROTATION;BSCALE;BZERO;BITPIX;"
    "NAXIS1;NAXIS2;R_SUN;CENTER_X;CENTER_Y;CDELT1;CDELT2;QUALITY;FILENAME;FILE_FORMAT;FILE_SIZE;DATA_TYPE;"
    "PROCESSING_LVL;COMMENT;LOC_FILENAME;URL;QCLK_URL;QCLK_FNAME"
).split(";")
SPOCA_INIT = [c for c in SDOSS_INIT if c != "FILE_SIZE"] + (
    "TIME_ORIGIN;TIME_SCALE;SPATIAL_FRAME_DESC;SPATIAL_FRAME_TYPE;SPATIAL_ORIGIN;SOLAR_B0;D_SUN;FEAT_FILENAME"
).split(";")
RABAT3_INIT = [c for c in SDOSS_INIT if c not in ("FILE_SIZE", "DATA_TYPE", "PROCESSING_LVL")]
TRACK = "ID;TRACK_ID;DATE_OBS;FEAT_X_PIX;FEAT_Y_PIX;PHENOM;REF_FEAT;LVL_TRUST;TRACK_FILENAME;FEAT_FILENAME;RUN_DATE"
SOSOFT_OBS = (
    "OBSERVAT;INSTRUME;TELESCOP;UNITS;WAVEMIN;WAVEMAX;WAVENAME;WAVEUNIT;OBS_TYPE;DATE_OBS;DATE_END;JDINT;JDFRAC;"
    "EXP_TIME;C_ROTATION;BSCALE;BZERO;BITPIX;NAXIS1;NAXIS2;R_SUN;CENTER_X;CENTER_Y;CDELT1;CDELT2;QUALITY;FILENAME;"
    "COMMENT;DENSITY;SPECTRAL_NAME;LOC_FILENAME"
).split(";")
SOSOFT_PP = (
    "RUN_DATE;LOC_FILE;EL_CEN_X;EL_CEN_Y;EL_AXIS1;EL_AXIS2;EL_ANGLE;STDEV;STDEVGEO;ALGERR;CDELT1;CDELT2;BITPIX;"
    "QSUN_INT;PR_LOCFNAME;ORG_FNAME;INSTITUT;CODE;PERSON;VERSION;CONTACT;EFIT;STANDARD;BACKGROUND;LINECLEAN;"
    "LINEC_MAIND;LIMBDARK;PERCENT;NAXIS1;NAXIS2;CENTER_X;CENTER_Y;R_SUN;DIVISION;INORM"
).split(";")
SOSOFT_FRC = "INSTITUT;CODE;VERSION;PERSON;CONTACT;ENC_MET;FEATURE_NAME;REFERENCE".split(";")
TRACKFIL = "ID_FIL_TRACK;TRACK_ID;FIL_ID;PHENOM;REF_FEAT;LVL_TRUST;RUN_DATE;TRACK_FNAME;FEAT_FNAME".split(";")


@pytest.fixture
def conn(fresh_db):
    with psycopg.connect(fresh_db) as c:
        yield c


def init_rows(columns, t: dt.datetime, observatories=(1, 2)) -> list[dict]:
    rows = []
    for local, oby in enumerate(observatories, start=1):
        v = values_for(KINDS["init"], local, t, ID_OBSERVATIONS=local, OBSERVATORY_ID=oby, COMMENT="NULL",
                       QCLK_URL="", QCLK_FNAME=f"ql_{stamp(t)}_{local}.jpg", FILENAME=f"img_{stamp(t)}_{local}.fits",
                       SOLAR_B0=-7.1, D_SUN=1.5e11, FILE_SIZE=123, DATE_END=iso(t + dt.timedelta(seconds=12)))
        rows.append({c: v.get(c, "x") for c in columns})
    return rows


def q(conn, sql, *args):
    return conn.execute(sql, args).fetchall()


# ---------------------------------------------------------------------------------- SDOSS


def sdoss_night(night: dt.date, spots=3) -> Archive:
    a = Archive("sdoss", night, "sdoss")
    a.sample("sdoss_106_frc_info.csv", "frc_info")
    a.sample("sdoss_106_observatory.csv", "observatory")
    t = dt.datetime.combine(night, dt.time(6))
    stem = f"sdoss_106_{stamp(t)}_sdo"
    a.add(f"{stem}_init.csv", "init", csv_bytes(SDOSS_INIT, init_rows(SDOSS_INIT, t), crlf=True))
    feat = [values_for(KINDS["sdoss_feat"], k, t, ID_SUNSPOT=k, FRC_INFO_ID=1, OBSERVATIONS_ID_IC=1,
                       OBSERVATIONS_ID_M=2, FEAT_FILENAME=f"{stem}_feat.csv", FEAT_TOT_BZ="\\N")
            for k in range(1, spots + 1)]
    a.add(f"{stem}_feat.csv", "feat", csv_bytes(header_of(KINDS["sdoss_feat"]), feat, shuffle=3))
    a.add(f"ql_{stamp(t)}_1.jpg", "quicklook", b"\xff\xd8jpeg")
    return a


def test_sdoss_detection_then_tracking_of_a_later_night(conn):
    detection = sdoss_night(N1)
    assert detection.load(conn).ok
    rows = q(conn, "select feat_x_pix, feat_tot_bz, qclk_url, observat, code from hfc.view_sp_hqi order by 1")
    assert [r[0] for r in rows] == [11, 21, 31] and rows[0][1] is None
    assert rows[0][2].startswith("file:///archive/sdoss/images/full/") and rows[0][3:] == ("SDO", "SDOSS")

    # SDOSS tracking is its own FRC: its track files point at feat files already in the catalogue.
    t = dt.datetime(2024, 3, 2, 1)
    feat = "sdoss_106_20240301T060000_sdo_feat.csv"
    tracking = Archive("sdoss-tracking", N2, "sdoss")
    header = ["ID_SUNSPOT"] + [c for c in TRACK.split(";")[1:] if c != "TRACK_FILENAME"]  # SDOSS writes none
    track = [{"ID_SUNSPOT": k, "TRACK_ID": 100 + k // 2, "DATE_OBS": iso(T1), "FEAT_X_PIX": 1, "FEAT_Y_PIX": 2,
              "PHENOM": 0, "REF_FEAT": "NULL", "LVL_TRUST": 90, "FEAT_FILENAME": feat, "RUN_DATE": iso(t)}
             for k in (1, 2, 3)]
    name = f"sdoss_106_{stamp(t)}_sdo_track.csv"
    tracking.add(name, "track", csv_bytes(header, track))
    report = tracking.load(conn)
    assert report.ok, report.summary()
    assert report.rows == {"sunspots_tracking": 3}
    got = q(conn, """select s.feat_x_pix, t.track_id, t.track_filename, t.ref_feat from hfc.sunspots_tracking t
                     join hfc.sunspots s on s.id_sunspot = t.sunspot_id order by 1""")
    assert got == [(11, 100, name, None), (21, 101, name, None), (31, 101, name, None)]

    # A track row naming a sunspot that file does not have: located, nothing of the file stored.
    track[1]["ID_SUNSPOT"] = 9
    tracking.replace(name, csv_bytes(header, track))
    report = tracking.load(conn)
    assert [(r.file, r.line, r.column) for r in report.rejected] == [(name, 3, "ID_SUNSPOT")]
    assert "id 9 of " + feat in report.rejected[0].reason
    assert q(conn, "select count(*) from hfc.sunspots_tracking") == [(0,)]


# ---------------------------------------------------------------------------------- SPoCA


def spoca_night(night: dt.date, product_format: str, feat_spec: str, feat_overrides: dict, n: int = 2) -> Archive:
    a = Archive(product_format, night, product_format)
    a.sample("spoca_300_frc_info.csv", "frc_info")
    a.sample("spoca_300_observatory.csv", "observatory")
    t = dt.datetime.combine(night, dt.time(4))
    stem = f"spoca_300_{stamp(t)}_sdo"
    a.add(f"{stem}_init.csv", "init", csv_bytes(SPOCA_INIT, init_rows(SPOCA_INIT, t, (3, 4)), crlf=True,
                                                  final_newline=False))
    spec = KINDS[feat_spec]
    rows = [values_for(spec, k, t, **{spec.local_id.name: k, "FEAT_FILENAME": f"{stem}_feat.csv", **feat_overrides})
            for k in range(1, n + 1)]
    a.add(f"{stem}_feat.csv", "feat", csv_bytes(header_of(spec), rows, shuffle=5))
    return a


def test_spoca_ar_with_tracks_in_the_same_manifest(conn):
    a = spoca_night(N1, "spoca-ar", "spoca_ar_feat",
                    {"FRC_INFO_ID": 3, "OBSERVATIONS_ID": 1, "OBSERVATIONS_ID_T": 2, "HELIO_ID": 77})
    feat = next(e["name"] for e in a.entries if e["kind"] == "feat")
    header = ["ID_AR"] + TRACK.split(";")[1:]
    track = [{"ID_AR": k, "TRACK_ID": 5, "DATE_OBS": iso(T1), "FEAT_X_PIX": 1, "FEAT_Y_PIX": 1, "PHENOM": 1,
              "REF_FEAT": 2, "LVL_TRUST": 80, "TRACK_FILENAME": "spoca_tracking_x.csv", "FEAT_FILENAME": feat,
              "RUN_DATE": iso(T1)} for k in (2, 1)]
    a.add(feat.replace("_feat", "_track"), "track", csv_bytes(header, track))
    report = a.load(conn)
    assert report.ok, report.summary()
    assert report.rows == {"observations": 2, "activeregions": 2, "activeregions_tracking": 2}
    assert report.metadata_new == {"observatory": 4, "frc_info": 4}
    rows = q(conn, "select institut, feature_name, wavemin, feat_x_pix, snapshot from hfc.view_ar_hqi order by 4")
    assert rows[0][:4] == ("IAS", "ACTIVE REGIONS", 17.1, 11)
    assert rows[0][4] == "snapshot_path1snapshot_fn1"
    assert q(conn, "select helio_ar_number, local_id from hfc.activeregions order by 2") == [(77, 1), (77, 2)]
    linked = q(conn, """select a.local_id, t.track_filename from hfc.activeregions_tracking t
                        join hfc.activeregions a on a.id_ar = t.ar_id order by 1""")
    assert linked == [(1, "spoca_tracking_x.csv"), (2, "spoca_tracking_x.csv")]
    # The second observation (OBSERVATIONS_ID_T) is the AIA 193 one.
    assert q(conn, """select oy.wavemin from hfc.activeregions a join hfc.observations o
                      on o.id_observations = a.observations_id_t join hfc.observatory oy
                      on oy.id_observatory = o.observatory_id limit 1""") == [(19.3,)]


def test_spoca_ch(conn):
    a = spoca_night(N1, "spoca-ch", "spoca_ch_feat",
                    {"FRC_INFO_ID": 2, "OBSERVATIONS_ID_EIT": 2, "OBSERVATIONS_ID_MDI": "NULL", "CHGROUPS_ID": 4})
    report = a.load(conn)
    assert report.ok, report.summary()
    rows = q(conn, "select feature_name, wavemin, feat_skew_bz, cc from hfc.view_ch_hqi order by 3")
    assert rows == [("CORONAL HOLES", 19.3, 1.25, "cc1"), ("CORONAL HOLES", 19.3, 2.25, "cc2")]
    assert q(conn, "select distinct chgroups_id, observations_id_mdi from hfc.coronalholes") == [(None, None)]


# ---------------------------------------------------------------------------------- SoSoFT and TrackFil


def sosoft_night(night: dt.date, n: int = 3) -> Archive:
    a = Archive("sosoft", night, "sosoft")
    t = dt.datetime.combine(night, dt.time(8, 30))
    stem = f"SoSoFT_10_{night:%Y%m%d}_meu1"
    pr = f"mh{night:%y%m%d}.083000.pr.fits"
    obs = values_for(KINDS["sosoft_obs"], 1, t, OBSERVAT="Meudon", INSTRUME="Spectroheliograph", TELESCOP="\\N",
                     UNITS="Counts", WAVEMIN=656.28, WAVEMAX="\\N", WAVENAME="Halpha", WAVEUNIT="nm",
                     OBS_TYPE="REMOTE-SENSING", SPECTRAL_NAME="Visible", FILENAME=f"mh{night:%y%m%d}.fits",
                     COMMENT="\\N", DENSITY=0.5)
    a.add(f"{stem}_obs.csv", "obs", csv_bytes(SOSOFT_OBS, [obs], trailing=True))
    pp = values_for(KINDS["sosoft_pp"], 1, t, PR_LOCFNAME=pr, ORG_FNAME=f"mh{night:%y%m%d}.fits", INSTITUT="OBSPM",
                    CODE="CLEAN", VERSION="2.1", PERSON="\\N", CONTACT="hfc@obspm.fr", EFIT=1, STANDARD=0,
                    BACKGROUND=1, LINECLEAN=0, LIMBDARK=1, DIVISION=1, STDEV="\\N", CDELT1=1.21)
    a.add(f"{stem}_pp.csv", "pp", csv_bytes(SOSOFT_PP, [pp], trailing=True))
    frc = {"INSTITUT": "OBSPM", "CODE": "SoSoFT", "VERSION": "1.0", "PERSON": "N. Fuller", "CONTACT": "hfc@obspm.fr",
           "ENC_MET": "CHAINCODE", "FEATURE_NAME": "FILAMENTS", "REFERENCE": "\\N"}
    a.add(f"{stem}_frc.csv", "frc", csv_bytes(SOSOFT_FRC, [frc], trailing=True))
    spec = KINDS["sosoft_feat"]
    feats = [values_for(spec, k, t, PR_LOCFNAME=pr, FEAT_FILENAME=f"{stem}_feat.csv", SNAPSHOT_FN="\\N",
                        HELIO_FI_NUMBER="\\N") for k in range(1, n + 1)]
    a.add(f"{stem}_feat.csv", "feat", csv_bytes(header_of(spec), feats, trailing=True))
    return a


def test_sosoft_without_ids_linked_by_pr_locfname(conn):
    a = sosoft_night(N1)
    report = a.load(conn)
    assert report.ok, report.summary()
    assert report.rows == {"observations": 1, "pp_output": 1, "filaments": 3}
    assert report.metadata_new == {"frc_info": 1, "observatory": 1, "pp_info": 1}
    rows = q(conn, "select institut, code, observat, telescop, filename, cdelt1, feat_x_pix, pr_locfname, "
                   "snapshot, track_id from hfc.view_fil_hqi order by feat_x_pix")
    assert [r[6] for r in rows] == [11, 21, 31]
    assert rows[0][:6] == ("OBSPM", "SoSoFT", "Meudon", None, "mh240301.fits", 1.21)
    assert rows[0][7] == "mh240301.083000.pr.fits" and rows[0][8] is None and rows[0][9] is None
    # Provenance of an observation: its own file, in one join.
    assert q(conn, "select f.name, f.kind from hfc.observations o join hfc.batch_file f "
                   "on f.batch_id = o.batch_id and f.name = o.src_file") == [("SoSoFT_10_20240301_meu1_obs.csv", "obs")]
    pp = q(conn, "select observat, cdelt1 from hfc.view_pp_hqi")
    assert pp == [("Meudon", 1.21)]
    assert q(conn, "select code, version, person, el_cen_y, stdev from hfc.pp_output "
                   "join hfc.pp_info on id_pp_info = pp_info_id") == [("CLEAN", "2.1", None, 1.25, 0.0)]
    # The same night again: same rows, the metadata matched, not duplicated.
    report = a.load(conn)
    assert report.ok and report.metadata_new == {"frc_info": 0, "observatory": 0, "pp_info": 0}
    assert q(conn, "select count(*) from hfc.view_fil_hqi") == [(3,)]


def test_sosoft_feat_pointing_at_unknown_pre_processed_image(conn):
    a = sosoft_night(N1, n=2)
    name = "SoSoFT_10_20240301_meu1_feat.csv"
    text = a.data_of(name).decode().replace("mh240301.083000.pr.fits", "other.fits", 1)
    a.replace(name, text.encode())
    report = a.load(conn)
    assert [(r.file, r.line, r.column) for r in report.rejected] == [(name, 2, "PR_LOCFNAME")]
    assert report.rows == {"observations": 1, "pp_output": 1, "filaments": 0}


def test_trackfil_tracks_point_at_catalogue_filaments(conn):
    assert sosoft_night(N1).load(conn).ok
    ids = [r[0] for r in q(conn, "select id_fil from hfc.filaments order by feat_x_pix")]
    a = Archive("trackfil", N1, "trackfil")
    t = dt.datetime(2024, 3, 1, 23)
    name = f"trackfil_10_{stamp(t)}_meu1_track.csv"
    rows = [{"ID_FIL_TRACK": k + 1, "TRACK_ID": 900, "FIL_ID": fid, "PHENOM": 0, "REF_FEAT": "NULL", "LVL_TRUST": 70,
             "RUN_DATE": iso(t), "TRACK_FNAME": name, "FEAT_FNAME": "SoSoFT_10_20240301_meu1_feat.csv"}
            for k, fid in enumerate(ids)]
    a.add(name, "track", csv_bytes(TRACKFIL, rows, crlf=True))
    report = a.load(conn)
    assert report.ok, report.summary()
    assert q(conn, "select feat_x_pix, track_id, track_lvl_trust from hfc.view_fil_hqi order by 1") == [
        (11, 900, 70), (21, 900, 70), (31, 900, 70)]
    rows[2]["FIL_ID"] = 999999
    a.replace(name, csv_bytes(TRACKFIL, rows, crlf=True))
    report = a.load(conn)
    assert [(r.line, r.column) for r in report.rejected] == [(4, "FIL_ID")]
    assert "999999 is not an id of hfc.filaments" in report.rejected[0].reason
    # Replacing the SoSoFT night cascades to the tracks that pointed at its filaments.
    assert q(conn, "select count(*) from hfc.filaments_tracking") == [(0,)]


# ---------------------------------------------------------------------------------- RABAT3


def test_rabat3_observatory_first_names_and_real_metadata(conn):
    a = Archive("rabat3", N1, "rabat3")
    a.sample("rabat3_203_frc_info.csv", "frc_info")
    a.sample("rabat3_203_observatory.csv", "observatory")  # ID_OBSERVAT, CRLF, no final newline
    t = dt.datetime(2024, 3, 1)
    stem = "rabat3_203_win_20240301"
    a.add(f"{stem}_init.csv", "init", csv_bytes(RABAT3_INIT, init_rows(RABAT3_INIT, t, (1, 2)), crlf=True))
    spec = KINDS["rabat3_feat"]
    rows = [values_for(spec, k, t, ID_TYPE_III=k, FRC_INFO_ID=1, OBSERVATIONS_ID=1 + k % 2, CC_X_UTC=1709251200.5,
                       HELIO_ID="NULL", FIT_A0="", FEAT_FILENAME=f"{stem}_feat.csv") for k in range(1, 5)]
    a.add(f"{stem}_feat.csv", "feat", csv_bytes(header_of(spec), rows))
    report = a.load(conn)
    assert report.ok, report.summary()
    assert report.rows == {"observations": 2, "type_iii": 4}
    got = q(conn, "select code, version, observat, telescop, spectral_name, cc_x_utc, fit_a0, time_start "
                  "from hfc.view_t3_hqi order by id_type_iii")
    assert len(got) == 4
    assert got[0][:5] == ("RABAT3", "2.0.3", "WIND", "RAD1", "RADIO")
    assert got[0][5:] == (1709251200.5, None, dt.datetime(2024, 3, 1))
    assert q(conn, "select count(*) from hfc.view_t3_gui") == [(4,)]


def test_sosoft_pre_processed_image_already_loaded_by_another_night_is_a_located_rejection(conn):
    assert sosoft_night(N1).load(conn).ok
    other = sosoft_night(N2)
    for e in list(other.entries):  # the same pre-processed image name as the night before
        data = other.data_of(e["name"]).replace(b"mh240302.083000.pr.fits", b"mh240301.083000.pr.fits")
        other.replace(e["name"], data)
    report = other.load(conn)
    pp = "SoSoFT_10_20240302_meu1_pp.csv"
    assert [(r.file, r.line, r.column) for r in report.rejected][:1] == [(pp, 2, "PR_LOCFNAME")]
    assert "pr_locfname" in report.rejected[0].reason and "already exists" in report.rejected[0].reason
    assert "SoSoFT_10_20240302_meu1_feat.csv" in report.rejected_files  # its features depend on it
    assert q(conn, "select count(*) from hfc.pp_output") == [(1,)]
