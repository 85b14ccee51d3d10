"""Every V12 table an FRC fills can receive rows from a declared kind (issue 13).

The tables no preset loads (radiosources, type_ii, prominences with its pp_output and pp_info,
chgroups, noaa with noaa_sp and noaa_ar, annotations) get made-up codes declared in a site
formats folder written here; a night of each code is written as real product files (HFC names,
``;``-separated, header row) and loaded with ``load_night(known=...)``. The rows must hold what
the files hold, in the tables and in the users' views, and a re-run of the night must leave the
same rows (no duplicates: noaa and its links are owned by the batch, migration 0009).
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from catalogue_files import Archive, csv_bytes, header_of, iso, stamp, values_for

from hfc_tasks.catalogue import upgrade
from hfc_tasks.catalogue.formats import FORMATS_FILE, FormatError, load_formats

pytestmark = pytest.mark.site

NIGHT = dt.date(2024, 3, 1)
T = dt.datetime(2024, 3, 1, 8, 30, 0)
VERSION = "10"
PIPELINE = {"batch_id", "local_id", "src_file"}
N = 2  # features (and links) per file

# Per table: the header names that are references (local ids of another file kind of the same
# night or code). Every other column of the catalogue table is declared as the catalogue has it.
REFS = {
    "radiosources": {"FRC_INFO_ID": "ref=frc_info", "OBSERVATIONS_ID": "ref=init"},
    "type_ii": {"FRC_INFO_ID": "ref=frc_info", "OBSERVATIONS_ID": "ref=init"},
    "pp_output": {"PP_INFO_ID": "ref=pp_info", "OBSERVATIONS_ID": "ref=init"},
    "prominences": {"FRC_INFO_ID": "ref=frc_info"},
    "chgroups": {},
    "coronalholes": {"OBSERVATIONS_ID_EIT": "ref=init", "OBSERVATIONS_ID_MDI": "ref=init",
                     "CHGROUPS_ID": "ref=chgroups"},
    "noaa": {},
    "noaa_sp": {"NOAA_ID": "ref=noaa", "SUNSPOT_ID": "ref=feat"},
    "noaa_ar": {"NOAA_ID": "ref=noaa", "AR_ID": "ref=feat"},
    "annotations": {},
    "pp_info": {},
}
# Per table: link lines (foreign keys the file does not carry as local ids); their target columns
# are left out of the file. A prominence names its pre-processed image like SoSoFT's filaments do
# (by PR_LOCFNAME); a coronal hole takes its code's only FRC_INFO row.
LINKS = {
    "prominences": ["pp_output_id <- ppout by PR_LOCFNAME"],
    "coronalholes": ["frc_info_id <- frc_info only"],
}
KINDS = {  # site kind -> catalogue table
    "every_rs_feat": "radiosources",
    "every_t2_feat": "type_ii",
    "every_pp_info": "pp_info",
    "every_ppout": "pp_output",
    "every_pro_feat": "prominences",
    "every_chgroups": "chgroups",
    "every_ch_feat": "coronalholes",
    "every_noaa": "noaa",
    "every_noaa_sp": "noaa_sp",
    "every_noaa_ar": "noaa_ar",
    "every_annotations": "annotations",
}
# code -> (observatory tag, format: file kind -> kind)
CODES = {
    "rsfind": ("nrh", {"annotations": "every_annotations", "feat": "every_rs_feat"}),
    "tiifind": ("wind", {"feat": "every_t2_feat"}),
    "profind": ("bass2000", {"pp_info": "every_pp_info", "ppout": "every_ppout", "feat": "every_pro_feat"}),
    "chgfind": ("eit", {"chgroups": "every_chgroups", "feat": "every_ch_feat"}),
    "spnoaa": ("sdo", {"feat": "sdoss_feat", "noaa": "every_noaa", "noaa_sp": "every_noaa_sp"}),
    "arnoaa": ("sdo", {"feat": "spoca_ar_feat", "noaa": "every_noaa", "noaa_ar": "every_noaa_ar"}),
}
COMMON = {"observatory": "observatory", "frc_info": "frc_info", "init": "init"}
FILES = {"pp_info": "code", "annotations": "code", "ppout": "observation", "chgroups": "observation",
         "noaa": "observation", "noaa_sp": "observation", "noaa_ar": "observation"}


def q(conn, sql, *args):
    return conn.execute(sql, args).fetchall()


def column_lines(conn, table: str) -> str:
    """The kind's column lines, from the catalogue's own columns (the V12 tables are long)."""
    lines = []
    for name, dtype, nullable, length, identity in q(
        conn,
        "select column_name, data_type, is_nullable, character_maximum_length, is_identity "
        "from information_schema.columns where table_schema = 'hfc' and table_name = %s order by ordinal_position",
        table,
    ):
        if name in PIPELINE or any(link.split()[0] == name for link in LINKS.get(table, ())):
            continue
        header = name.upper()
        typ = {"integer": "int", "smallint": "int", "bigint": "int", "double precision": "float",
               "timestamp without time zone": "datetime", "text": "text"}.get(dtype) or f"text({length})"
        flags = ["id"] if identity == "YES" else ["notnull"] if nullable == "NO" else []
        if header in REFS[table]:
            flags.append(REFS[table][header])
        lines.append(f"{header:<28} {typ:<12} {' '.join(flags)}".rstrip())
    return "\n".join(lines) + "\n"


def site_yaml(conn) -> str:
    """The site formats file: file kinds, annotations as a metadata table, kinds and formats."""
    out = ["files:"] + [f"  {k}: {v}" for k, v in FILES.items()]
    out += ["metadata_tables:", "  annotations: [field_name]", "kinds:"]
    for kind, table in KINDS.items():
        body = "".join(f"      {line}\n" for line in column_lines(conn, table).splitlines())
        out += [f"  {kind}:", f"    table: {table}"]
        if table in LINKS:
            out += ["    links:"] + [f"      - {link}" for link in LINKS[table]]
        out += ["    columns: |", body.rstrip("\n")]
    out.append("formats:")
    for code, (_, mapping) in CODES.items():
        out.append(f"  every-{code}:")
        out += [f"    {k}: {v}" for k, v in {**COMMON, **mapping}.items()]
    return "\n".join(out) + "\n"


@pytest.fixture
def conn(fresh_db):
    with psycopg.connect(fresh_db) as c:
        upgrade(c)
        c.commit()
        yield c


@pytest.fixture
def known(conn, tmp_path):
    folder = tmp_path / "formats.d"
    folder.mkdir()
    (folder / "every_table.yaml").write_text(site_yaml(conn))
    return load_formats(site_dir=folder)


# ---------------------------------------------------------------------------------- a night


class Night:
    """The files of one made-up code's night and the values written in them (header -> value)."""

    def __init__(self, known, code: str):
        self.known, self.code = known, code
        self.obs, mapping = CODES[code]
        self.archive = Archive(code, NIGHT, f"every-{code}")
        self.written: dict[str, list[dict]] = {}  # file kind -> rows
        self.stem = f"{code}_{VERSION}_{stamp(T)}_{self.obs}"
        self.spec_of = {**COMMON, **mapping}
        k = known.kinds
        self.add(f"{code}_{VERSION}_frc_info.csv", "frc_info", [values_for(
            k["frc_info"], 1, T, ID_FRC_INFO=1, INSTITUT="OBSPM", CODE=code.upper(), VERSION=VERSION,
            FEATURE_NAME=f"{code.upper()} FEATURES")])
        self.add(f"{code}_{VERSION}_observatory.csv", "observatory", [values_for(
            k["observatory"], i, T, ID_OBSERVATORY=i, OBSERVAT=self.obs.upper(), INSTRUME=f"{self.obs}-i{i}")
            for i in (1, 2)])
        self.add(f"{self.stem}_init.csv", "init", [values_for(
            k["init"], i, T, ID_OBSERVATIONS=i, OBSERVATORY_ID=i, FILENAME=f"{code}_img{i}.fits",
            DATE_END=iso(T + dt.timedelta(seconds=30))) for i in (1, 2)])

    def kind(self, file_kind: str):
        return self.known.kinds[self.spec_of[file_kind]]

    def add(self, name: str, file_kind: str, rows: list[dict]) -> None:
        self.written[file_kind] = rows
        self.archive.add(name, file_kind, csv_bytes(header_of(self.known.kinds[self.spec_of[file_kind]]), rows))

    def rows(self, file_kind: str, **overrides) -> list[dict]:
        """N rows of a per-observation file kind, local ids 1..N, file name filled in."""
        spec = self.kind(file_kind)
        name = f"{self.stem}_{file_kind}.csv"
        out = []
        for i in range(1, N + 1):
            extra = {spec.local_id.name: i} if spec.local_id else {}
            if any(c.name == "FEAT_FILENAME" for c in spec.columns):
                extra["FEAT_FILENAME"] = name
            out.append(values_for(spec, i, T, **extra, **{k: v(i) if callable(v) else v for k, v in overrides.items()}))
        self.add(name, file_kind, out)
        return out


def radiosources(known) -> Night:
    n = Night(known, "rsfind")
    n.rows("feat", FRC_INFO_ID=1, OBSERVATIONS_ID=lambda i: i)
    n.add(f"rsfind_{VERSION}_annotations.csv", "annotations", [values_for(
        n.kind("annotations"), i, T, ID_ANNOTATION=i, FIELD_NAME=f"rsfind_field{i}", TABLE_NAME="radiosources",
        DESCRIPTION=f"what field {i} means") for i in (1, 2)])
    return n


def type_ii(known) -> Night:
    n = Night(known, "tiifind")
    n.rows("feat", FRC_INFO_ID=1, OBSERVATIONS_ID=lambda i: i, SKE_CC_X_UTC=iso(T + dt.timedelta(minutes=5)))
    return n


def prominences(known) -> Night:
    n = Night(known, "profind")
    n.add(f"profind_{VERSION}_{n.obs}_pp_info.csv", "pp_info", [values_for(
        n.kind("pp_info"), 1, T, ID_PP_INFO=1, INSTITUT="OBSPM", CODE="PROPP", VERSION="2")])
    # Its own geometry (not the observation's values, which values_for would make equal).
    n.rows("ppout", PP_INFO_ID=1, OBSERVATIONS_ID=lambda i: i, PR_LOCFNAME=lambda i: f"profind_pp_{i}.fits",
           NAXIS1=lambda i: 1024 * i, NAXIS2=lambda i: 1024 * i + 1, CDELT1=lambda i: 0.5 * i, CENTER_X=512.75)
    # Linked by PR_LOCFNAME into a ppout file the bulk path COPYed (not parsed): before the fix
    # in resolve.py every prominence was rejected as "not the PR_LOCFNAME of any row".
    n.rows("feat", FRC_INFO_ID=1, PR_LOCFNAME=lambda i: f"profind_pp_{N + 1 - i}.fits", BLOB_SEPARATOR=",",
           LEVEL_SEPARATOR="|")
    return n


def chgroups(known) -> Night:
    n = Night(known, "chgfind")
    n.rows("chgroups", CH_NUMS=lambda i: f"{i},{i + 1}")
    n.rows("feat", OBSERVATIONS_ID_EIT=1, OBSERVATIONS_ID_MDI=2, CHGROUPS_ID=lambda i: i)
    return n


def sunspot_noaa(known) -> Night:
    n = Night(known, "spnoaa")
    n.rows("feat", FRC_INFO_ID=1, OBSERVATIONS_ID_IC=1, OBSERVATIONS_ID_M=2)
    n.rows("noaa", NOAA_NUMBER=lambda i: 13600 + i, FILENAME="noaa_srs_20240301.txt")
    n.rows("noaa_sp", NOAA_ID=lambda i: N + 1 - i, SUNSPOT_ID=lambda i: i)
    return n


def ar_noaa(known) -> Night:
    n = Night(known, "arnoaa")
    n.rows("feat", FRC_INFO_ID=1, OBSERVATIONS_ID=1, OBSERVATIONS_ID_T=2)
    n.rows("noaa", NOAA_NUMBER=lambda i: 13700 + i)
    n.rows("noaa_ar", NOAA_ID=lambda i: i, AR_ID=lambda i: N + 1 - i)
    return n


# ---------------------------------------------------------------------------------- checks


def expected(spec, row: dict, column) -> object:
    v = row[column.name]
    if column.type == "int":
        return int(v)
    if column.type == "float":
        return float(v)
    if column.type == "datetime":
        return dt.datetime.fromisoformat(str(v))
    return str(v)


def plain_columns(spec) -> list:
    """Stored columns that hold the file's own values (not ids, which the loader remaps)."""
    return [c for c in spec.stored_columns if not (c.local_id or c.ref)]


def assert_table(conn, night: Night, file_kind: str, where: str, order: str) -> None:
    """The rows of the file in its table, column by column, as written."""
    spec = night.kind(file_kind)
    cols = plain_columns(spec)
    got = q(conn, f"select {', '.join(c.target for c in cols)} from hfc.{spec.table} where {where} order by {order}")
    want = [tuple(expected(spec, r, c) for c in cols) for r in night.written[file_kind]]
    assert got == want, f"hfc.{spec.table} ({night.code})"


def view_common(conn, view: str, spec, joined: tuple[str, ...]) -> list[str]:
    """The view's columns that come from the kind's table (same name, in no joined table)."""
    def cols(rel):
        return [r[0] for r in q(conn, "select column_name from information_schema.columns where table_schema = 'hfc' "
                                      "and table_name = %s order by ordinal_position", rel)]
    others = {c for t in joined for c in cols(t)}
    mine = {c.target for c in plain_columns(spec)}
    return [c for c in cols(view) if c in mine and c not in others]


def assert_view(conn, night: Night, view: str, joined: tuple[str, ...], order: str, file_kind: str = "feat") -> None:
    spec = night.kind(file_kind)
    common = view_common(conn, view, spec, joined)
    assert len(common) > 5, (view, common)
    by_target = {c.target: c for c in spec.stored_columns}
    got = q(conn, f"select code, observat, {', '.join(common)} from hfc.{view} where code = %s order by {order}",
            night.code.upper())
    want = sorted(
        ((night.code.upper(), night.obs.upper(), *(expected(spec, r, by_target[c]) for c in common))
         for r in night.written[file_kind]),
        key=lambda t: t[2 + common.index(order)],
    )
    assert got == want, view


def check_catalogue(conn, nights: dict[str, Night]) -> None:
    """What every night's files hold, in the tables and the views, and nothing more."""
    rs, t2, pro, chg, sp, ar = (nights[c] for c in CODES)
    frc = ("frc_info", "observatory", "observations")
    counts = {t: q(conn, f"select count(*) from hfc.{t}")[0][0] for t in (
        "radiosources", "type_ii", "pp_output", "prominences", "chgroups", "coronalholes", "sunspots",
        "activeregions", "noaa", "noaa_sp", "noaa_ar", "pp_info", "annotations", "frc_info", "observations")}
    assert counts == {"radiosources": N, "type_ii": N, "pp_output": N, "prominences": N, "chgroups": N,
                      "coronalholes": N, "sunspots": N, "activeregions": N, "noaa": 2 * N, "noaa_sp": N,
                      "noaa_ar": N, "pp_info": 1, "annotations": 2, "frc_info": len(CODES),
                      "observations": 2 * len(CODES)}

    # Radio sources and type II bursts: every column, and their observation (local id i -> image i).
    for night in (rs, t2):
        table = night.kind("feat").table
        assert_table(conn, night, "feat", "true", "local_id")
        assert q(conn, f"select x.local_id, o.filename, f.code from hfc.{table} x join hfc.observations o "
                       "on o.id_observations = x.observations_id join hfc.frc_info f on f.id_frc_info = x.frc_info_id "
                       "order by 1") == [(i, f"{night.code}_img{i}.fits", night.code.upper()) for i in range(1, N + 1)]
    assert_view(conn, rs, "view_rs_hqi", frc, "feat_x_pix")
    assert_view(conn, t2, "view_t2_hqi", frc, "rs_length")
    assert q(conn, "select field_name, table_name, description from hfc.annotations order by 1") == [
        (f"rsfind_field{i}", "radiosources", f"what field {i} means") for i in (1, 2)]

    # Prominences -> their pre-processed image (written in reverse) -> its PP_INFO file's row.
    assert_table(conn, pro, "ppout", "true", "pr_locfname")
    assert_table(conn, pro, "feat", "true", "local_id")
    assert q(conn, "select x.local_id, pp.pr_locfname, i.code, i.version, o.filename from hfc.prominences x "
                   "join hfc.pp_output pp on pp.id_pp_output = x.pp_output_id "
                   "join hfc.pp_info i on i.id_pp_info = pp.pp_info_id "
                   "join hfc.observations o on o.id_observations = pp.observations_id order by 1") == [
        (i, f"profind_pp_{N + 1 - i}.fits", "PROPP", "2", f"profind_img{N + 1 - i}.fits") for i in range(1, N + 1)]
    assert q(conn, "select institut, code, version from hfc.pp_info") == [("OBSPM", "PROPP", "2")]
    assert_view(conn, pro, "view_pro_hqi", (*frc, "pp_output"), "feat_area_pix")
    # VIEW_PP_HQI: each pre-processed image's own geometry beside its observation's names.
    cols = ["CDELT1", "CDELT2", "NAXIS1", "NAXIS2", "CENTER_X", "CENTER_Y", "R_SUN"]
    assert q(conn, f"select observat, filename, {', '.join(cols)} from hfc.view_pp_hqi order by filename") == [
        ("BASS2000", f"profind_img{r['OBSERVATIONS_ID']}.fits", *(float(r[c]) if "_" in c or "DELT" in c
                                                                   else int(r[c]) for c in cols))
        for r in sorted(pro.written["ppout"], key=lambda r: r["OBSERVATIONS_ID"])]

    # CH groups, and the coronal holes that point at them.
    assert_table(conn, chg, "chgroups", "true", "ch_nums")
    assert_table(conn, chg, "feat", "true", "local_id")
    assert q(conn, "select x.local_id, g.ch_nums, f.code, o.filename from hfc.coronalholes x join hfc.chgroups g "
                   "on g.id_chgroups = x.chgroups_id join hfc.frc_info f on f.id_frc_info = x.frc_info_id "
                   "join hfc.observations o on o.id_observations = x.observations_id_eit order by 1") == [
        (i, f"{i},{i + 1}", "CHGFIND", "chgfind_img1.fits") for i in range(1, N + 1)]
    assert_view(conn, chg, "view_ch_hqi", frc, "feat_x_pix")

    # NOAA numbers of this night's sunspots (written in reverse) and active regions.
    assert_table(conn, sp, "noaa", "noaa_number < 13700", "noaa_number")
    assert_table(conn, ar, "noaa", "noaa_number >= 13700", "noaa_number")
    assert q(conn, "select s.local_id, n.noaa_number from hfc.noaa_sp l join hfc.sunspots s "
                   "on s.id_sunspot = l.sunspot_id join hfc.noaa n on n.id_noaa = l.noaa_id order by 1") == [
        (i, 13600 + N + 1 - i) for i in range(1, N + 1)]
    assert q(conn, "select a.local_id, n.noaa_number from hfc.noaa_ar l join hfc.activeregions a "
                   "on a.id_ar = l.ar_id join hfc.noaa n on n.id_noaa = l.noaa_id order by 1") == [
        (i, 13700 + N + 1 - i) for i in range(1, N + 1)]
    assert q(conn, "select feat_x_pix, noaa_number from hfc.view_sp_hqi order by 1") == [
        (10 * i + 1, 13600 + N + 1 - i) for i in range(1, N + 1)]
    assert q(conn, "select feat_x_pix, noaa_number from hfc.view_ar_hqi order by 1") == [
        (10 * i + 1, 13700 + N + 1 - i) for i in range(1, N + 1)]
    # Each batch owns its NOAA rows and links: the re-run's delete of the batch takes them.
    assert q(conn, "select count(*) from hfc.noaa n join hfc.batch b on b.id = n.batch_id and b.frc in "
                   "('spnoaa', 'arnoaa')") == [(2 * N,)]
    assert q(conn, "select count(*) from hfc.noaa_sp where batch_id is null") == [(0,)]
    assert q(conn, "select count(*) from hfc.noaa_ar where batch_id is null") == [(0,)]


def test_every_table_an_frc_fills_loads_from_a_site_declared_kind_and_reloads_the_same(conn, known):
    presets = FORMATS_FILE.read_bytes()
    nights = {code: build(known) for code, build in zip(
        CODES, (radiosources, type_ii, prominences, chgroups, sunspot_noaa, ar_noaa), strict=True)}
    for night in nights.values():
        report = night.archive.load(conn, known=known)
        assert report.ok and report.status == "loaded", report.summary()
        assert len(report.files_loaded) == len(night.archive.entries)
    assert q(conn, "select frc, row_counts from hfc.batch where frc = 'spnoaa'") == [
        ("spnoaa", {"observations": 2, "sunspots": N, "noaa": N, "noaa_sp": N})]
    check_catalogue(conn, nights)

    # The re-run contract: the same night again leaves the same rows, no duplicates anywhere.
    first = dict(q(conn, "select frc, id from hfc.batch"))
    for night in nights.values():
        assert night.archive.load(conn, known=known).ok
    assert all(i > first[frc] for frc, i in q(conn, "select frc, id from hfc.batch"))
    check_catalogue(conn, nights)
    assert FORMATS_FILE.read_bytes() == presets


# ---------------------------------------------------------------------------------- refused declarations


def one_table_site(tmp_path, conn, table: str, extra: str = "") -> object:
    folder = tmp_path / "bad.d"
    folder.mkdir()
    body = "".join(f"      {line}\n" for line in column_lines(conn, table).splitlines())
    (folder / "bad.yaml").write_text(
        f"files:\n  {table}: code\n{extra}kinds:\n  bad_{table}:\n    table: {table}\n    columns: |\n{body}"
        f"formats:\n  bad:\n    {table}: bad_{table}\n")
    return load_formats(site_dir=folder)


def bad_night(known, table: str) -> Archive:
    a = Archive("badcode", NIGHT, "bad")
    spec = known.kinds[f"bad_{table}"]
    a.add(f"badcode_1_{table}.csv", table, csv_bytes(header_of(spec), [values_for(spec, 1, T)]))
    return a


def test_a_kind_whose_table_no_batch_owns_is_refused_before_any_row_is_written(conn, tmp_path):
    # annotations has no batch_id: its rows could not be taken away when the night is re-run.
    known = one_table_site(tmp_path, conn, "annotations")
    with pytest.raises(FormatError) as err:
        bad_night(known, "annotations").load(conn, known=known)
    conn.rollback()
    message = str(err.value)
    assert "kind bad_annotations" in message and "hfc.annotations has no batch_id" in message
    assert "metadata_tables" in message and "re-run" in message
    assert q(conn, "select count(*) from hfc.annotations") == [(0,)]
    assert q(conn, "select count(*) from hfc.batch") == [(0,)]


def test_a_metadata_table_whose_match_key_has_no_unique_index_is_refused_by_name(conn, tmp_path):
    # Matching by content needs a unique index on exactly the key (ON CONFLICT); annotations has
    # one on field_name only, not on table_name.
    known = one_table_site(tmp_path, conn, "annotations", "metadata_tables:\n  annotations: [table_name]\n")
    with pytest.raises(FormatError) as err:
        bad_night(known, "annotations").load(conn, known=known)
    conn.rollback()
    message = str(err.value)
    assert "hfc.annotations" in message and "(table_name)" in message and "unique" in message
    assert q(conn, "select count(*) from hfc.annotations") == [(0,)]
