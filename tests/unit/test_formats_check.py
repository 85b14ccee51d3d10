"""``hfc formats check``: the loader's verdict on a folder of product files without a database,
and ``hfc config validate`` on a registry with a site formats folder (issue 13)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from helpers import SITE_PP, csv_bytes, iso, stamp, values_for

from hfc_tasks.catalogue.check import CheckError, check_folder, choose_format
from hfc_tasks.catalogue.formats import KNOWN
from hfc_tasks.ops.cli import main
from hfc_tasks.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "data" / "hfc_samples"
HFC = REPO / ".venv" / "bin" / "hfc"
T1 = dt.datetime(2024, 3, 1, 6, 0, 0)
T2 = dt.datetime(2024, 3, 1, 18, 0, 0)


def stored_header(spec, *more: str) -> list[str]:
    return [c.name for c in spec.columns if c.target] + list(more)


def sdoss_folder(folder: Path, *, nulls: dict[dt.datetime, list[int]] | None = None) -> dict[str, str]:
    """A night of SDOSS in ``folder``: the real metadata samples, an init and a feat file per
    observation time (two), a quicklook. ``nulls``: per time, the spots whose FEAT_X_PIX is NULL
    (a NOT NULL column). The first init file carries a column no kind knows (MY_NOTE)."""
    folder.mkdir(exist_ok=True)
    for name in ("sdoss_106_frc_info.csv", "sdoss_106_observatory.csv"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    names = {}
    for t in (T1, T2):
        stem = f"sdoss_106_{stamp(t)}_sdo"
        init = KNOWN.kinds["init"]
        header = stored_header(init, "FILE_SIZE", *(["MY_NOTE"] if t == T1 else []))
        rows = [values_for(init, k, t, ID_OBSERVATIONS=k, OBSERVATORY_ID=k, COMMENT="NULL", QCLK_URL="",
                           QCLK_FNAME=f"ql_{stamp(t)}_{k}.jpg", FILE_SIZE=12, MY_NOTE="hello") for k in (1, 2)]
        (folder / f"{stem}_init.csv").write_bytes(csv_bytes(header, rows, crlf=True))
        feat = KNOWN.kinds["sdoss_feat"]
        spots = [values_for(feat, k, t, ID_SUNSPOT=k, FRC_INFO_ID=1, OBSERVATIONS_ID_IC=1, OBSERVATIONS_ID_M=2,
                            FEAT_FILENAME=f"{stem}_feat.csv", FEAT_TOT_BZ="\\N") for k in range(1, 6)]
        for k in (nulls or {}).get(t, []):
            spots[k - 1]["FEAT_X_PIX"] = "NULL"
        (folder / f"{stem}_feat.csv").write_bytes(csv_bytes(stored_header(feat), spots))
        names[t] = stem
    (folder / f"ql_{stamp(T1)}_1.jpg").write_bytes(b"\xff\xd8jpeg")
    return names


def by_name(result) -> dict:
    return {f.name: f for f in result.files}


# ---------------------------------------------------------------------------------- the check


def test_a_good_night_would_load_and_says_what_is_not_stored_and_left_empty(tmp_path):
    stems = sdoss_folder(tmp_path / "night")
    result = check_folder(tmp_path / "night", KNOWN, "sdoss")
    assert result.ok and not result.groups, result.text()
    files = by_name(result)
    init = files[f"{stems[T1]}_init.csv"]
    assert (init.kind, init.spec, init.table, init.rows, init.verdict) == ("init", "init", "observations", 2, "loads")
    # MY_NOTE is known to no kind, FILE_SIZE is a known `extra` column: neither is stored.
    assert init.not_stored == ["FILE_SIZE", "MY_NOTE"]
    assert files[f"{stems[T2]}_init.csv"].not_stored == ["FILE_SIZE"]
    # COMMENT is NULL on every row; QCLK_URL is empty too, but the loader fills it from the quicklooks.
    assert "comment" in init.empty and "date_obs" not in init.empty
    assert "qclk_url (the loader fills it for rows whose QCLK_FNAME is an archived quicklook)" in init.empty
    assert files[f"{stems[T1]}_feat.csv"].empty == ["feat_tot_bz"]
    assert files[f"ql_{stamp(T1)}_1.jpg"].verdict == "quicklook"
    assert [t for _, _, t in result.load_order] == [
        "observatory", "frc_info", "observations", "sunspots", "sunspots_tracking"]
    text = result.text()
    assert "not stored: FILE_SIZE, MY_NOTE" in text and "verdict: every file would load (7)" in text


def test_nulls_in_a_not_null_column_of_two_files_are_one_grouped_line(tmp_path):
    stems = sdoss_folder(tmp_path / "night", nulls={T1: [1, 2, 3], T2: [2, 4]})
    result = check_folder(tmp_path / "night", KNOWN, "sdoss")
    assert not result.ok
    a, b = f"{stems[T1]}_feat.csv", f"{stems[T2]}_feat.csv"
    assert [str(g) for g in result.groups] == [
        f"column FEAT_X_PIX: NULL in 5 rows of 2 files ({a} lines 2-4, {b} lines 3, 5)"]
    files = by_name(result)
    assert files[a].verdict == files[b].verdict == "refused"
    assert files[f"{stems[T1]}_init.csv"].verdict == "loads"
    text = result.text()
    assert f"column FEAT_X_PIX: NULL in 5 rows of 2 files ({a} lines 2-4, {b} lines 3, 5)" in text
    assert text.endswith(f"verdict: 2 of 7 file(s) would not load: {a}, {b}")


def test_ids_pointing_nowhere_in_the_companion_file_are_refused_like_the_loader_does(tmp_path):
    stems = sdoss_folder(tmp_path / "night")
    # The feat file's rows point at observations 1 and 2 of its init file: drop the init's row 2.
    init = tmp_path / "night" / f"{stems[T1]}_init.csv"
    init.write_bytes(b"\r\n".join(init.read_bytes().split(b"\r\n")[:2]) + b"\r\n")
    # The second night's init file is gone: its feat file has no companion.
    (tmp_path / "night" / f"{stems[T2]}_init.csv").unlink()
    result = check_folder(tmp_path / "night", KNOWN, "sdoss")
    lines = [str(g) for g in result.groups]
    assert lines[0] == (f"column OBSERVATIONS_ID_M: not an id of its companion file (e.g. 2) in 5 rows of 1 file "
                        f"({stems[T1]}_feat.csv lines 2-6)")
    assert by_name(result)[f"{stems[T1]}_feat.csv"].problems[0].reason == f"id 2 is not an id of {stems[T1]}_init.csv"
    lonely = by_name(result)[f"{stems[T2]}_feat.csv"]
    assert lonely.verdict == "refused"
    assert [(p.column, p.reason) for p in lonely.problems] == [
        ("OBSERVATIONS_ID_IC", "no init file for it in the manifest"),
        ("OBSERVATIONS_ID_M", "no init file for it in the manifest")]
    assert any("OBSERVATIONS_ID_IC" in line and "no init file for it in the manifest in 1 file" in line
               for line in lines), lines


def test_tracking_ids_are_checked_in_the_folder_and_the_catalogue_is_said_not_checked(tmp_path):
    stems = sdoss_folder(tmp_path / "night")
    feat = f"{stems[T1]}_feat.csv"
    header = "ID_SUNSPOT;TRACK_ID;PHENOM;REF_FEAT;LVL_TRUST;FEAT_FILENAME;RUN_DATE".split(";")
    rows = [{"ID_SUNSPOT": k, "TRACK_ID": 100 + k, "PHENOM": 0, "REF_FEAT": "NULL", "LVL_TRUST": 90,
             "FEAT_FILENAME": f, "RUN_DATE": iso(T2)}
            for k, f in ((1, feat), (9, feat), (2, "sdoss_106_20240229T060000_sdo_feat.csv"))]
    name = f"sdoss_106_{stamp(T2)}_sdo_track.csv"
    (tmp_path / "night" / name).write_bytes(csv_bytes(header, rows))
    result = check_folder(tmp_path / "night", KNOWN, "sdoss")
    assert [str(g) for g in result.groups] == [
        f"column ID_SUNSPOT: id of the named file not in this manifest (e.g. 9 of {feat}) in 1 row of 1 file "
        f"({name} line 3)"]
    assert any(n.startswith(f"{name}: ID_SUNSPOT ids of 1 feat file(s) not in this folder") for n in result.not_checked)


def test_files_no_kind_takes_are_listed_with_the_expected_shapes(tmp_path):
    sdoss_folder(tmp_path / "night")
    for odd in ("notes.txt", "sdoss_106_20240301T060000_sdo_weird.csv"):
        (tmp_path / "night" / odd).write_text("x\n")
    result = check_folder(tmp_path / "night", KNOWN, "sdoss")
    files = by_name(result)
    assert files["notes.txt"].verdict == files["sdoss_106_20240301T060000_sdo_weird.csv"].verdict == "not a product"
    assert not result.ok
    text = result.text()
    assert "notes.txt" in text and "not an HFC product name" in text
    assert "{code}_{version}_{stamp}_{obs}_{kind}.csv" in result.expected_names
    assert "expected names: a .jpg/.png quicklook, or {code}_{version}[_{obs}]_{kind}.csv with kind frc_info" in text


# ------------------------------------------------------------------------ a site formats folder

REGISTRY = """
default_site: local
formats_dir: formats.d
sites:
  local: {products_root: /p, frc_root: /f, archive_root: /a, public_url_base: file:///a}
frcs:
  - name: sdoss
    version: "1"
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: demo-pp
    command: run -o {run_dir}
"""


def site_registry(tmp_path: Path, **formats_files: str) -> Path:
    folder = tmp_path / "formats.d"
    folder.mkdir()
    for name, text in formats_files.items():
        (folder / f"{name}.yaml").write_text(text)
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    return path


def pp_folder(folder: Path, known) -> str:
    """An SDOSS night plus the site's files: a PP_INFO file and a PP_OUTPUT file per observation,
    the first of which leaves LOC_FILE empty on one row and points at an observation its init
    file lacks."""
    stems = sdoss_folder(folder)
    info = known.kinds["site_pp_info"]
    (folder / "sdoss_106_pp_info.csv").write_bytes(csv_bytes(stored_header(info), [
        values_for(info, 1, T1, ID_PP_INFO=1, REFERENCE="NULL")]))
    out = known.kinds["site_ppout"]
    for t in (T1, T2):
        rows = [values_for(out, k, t, ID_PP_OUTPUT=k, PP_INFO_ID=1, OBSERVATIONS_ID=k, PP_NOTE="n") for k in (1, 2)]
        if t == T1:
            rows[1].update(LOC_FILE="", OBSERVATIONS_ID=5)
        (folder / f"{stems[t]}_ppout.csv").write_bytes(csv_bytes(stored_header(out, "PP_NOTE"), rows))
    return f"{stems[T1]}_ppout.csv"


def test_a_site_file_kind_is_classified_and_checked(tmp_path):
    reg = load_registry(site_registry(tmp_path, pp=SITE_PP))
    bad = pp_folder(tmp_path / "night", reg.formats)
    fmt, products, frc = choose_format(reg.formats, reg.frcs, ["sdoss_106_pp_info.csv"])
    assert (fmt, products, frc) == ("demo-pp", {}, "sdoss")  # the registry FRC named like the files' code
    result = check_folder(tmp_path / "night", reg.formats, fmt, products, frc=frc)
    files = by_name(result)
    assert (files["sdoss_106_pp_info.csv"].kind, files["sdoss_106_pp_info.csv"].table) == ("pp_info", "pp_info")
    assert files["sdoss_106_pp_info.csv"].verdict == "loads" and files["sdoss_106_pp_info.csv"].empty == ["reference"]
    out = files[bad]
    assert (out.kind, out.spec, out.table, out.rows, out.verdict) == ("ppout", "site_ppout", "pp_output", 2, "refused")
    assert out.not_stored == ["PP_NOTE"]
    assert [str(g) for g in result.groups] == [f"column LOC_FILE: NULL in 1 row of 1 file ({bad} line 3)"]
    assert files[bad.replace(stamp(T1), stamp(T2))].verdict == "loads"
    assert result.formats_files[1].endswith("formats.d/pp.yaml")
    # Without the site's formats the same files are names no kind takes.
    plain = check_folder(tmp_path / "night", KNOWN, "sdoss")
    assert by_name(plain)[bad].verdict == "not a product"


def test_the_loaders_reference_check_also_runs_on_a_site_kind(tmp_path):
    reg = load_registry(site_registry(tmp_path, pp=SITE_PP))
    bad = pp_folder(tmp_path / "night", reg.formats)
    path = tmp_path / "night" / bad
    path.write_text(path.read_text().replace(";;", ";loc;"))  # LOC_FILE given: only the reference is left
    result = check_folder(tmp_path / "night", reg.formats, "demo-pp")
    assert [str(g) for g in result.groups] == [
        f"column OBSERVATIONS_ID: not an id of its companion file (e.g. 5) in 1 row of 1 file ({bad} line 3)"]


def test_the_cli_checks_a_folder_as_a_subprocess(tmp_path):
    registry = site_registry(tmp_path, pp=SITE_PP)
    bad = pp_folder(tmp_path / "night", load_registry(registry).formats)
    (tmp_path / "night" / "notes.txt").write_text("x\n")
    run = subprocess.run([str(HFC), "formats", "check", str(tmp_path / "night"), "--registry", str(registry),
                          "--frc", "sdoss"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    out = run.stdout
    assert "FRC sdoss, product format demo-pp" in out
    assert f"{bad}" in out and "ppout (site_ppout) -> pp_output, 2 rows: REFUSED" in out
    assert f"column LOC_FILE: NULL in 1 row of 1 file ({bad} line 3)" in out
    assert "notes.txt" in out and "not an HFC product name" in out
    assert "not checked (needs the catalogue database):" in out


def test_cli_exit_codes_json_and_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HFC_CATALOGUE_DSN", "postgresql://nobody@192.0.2.1:1/none?connect_timeout=1")
    registry = site_registry(tmp_path, pp=SITE_PP)
    sdoss_folder(tmp_path / "night")
    assert main(["--registry", str(registry), "formats", "check", str(tmp_path / "night"),
                 "--product-format", "sdoss", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ok"] and got["product_format"] == "sdoss" and got["refused"] == []
    # No database is needed: the DSN points nowhere.
    assert main(["formats", "check", str(tmp_path / "night"), "--registry", str(registry), "--frc", "sdoss"]) == 0
    capsys.readouterr()
    # No FRC named like the code, no --frc: say what to pass (exit 2).
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "abc_1_frc_info.csv").write_bytes((SAMPLES / "sdoss_106_frc_info.csv").read_bytes())
    assert main(["formats", "check", str(tmp_path / "other"), "--registry", str(registry)]) == 2
    assert "pass --frc" in capsys.readouterr().err
    assert main(["formats", "check", str(tmp_path / "nowhere"), "--registry", str(registry)]) == 2
    assert main(["formats", "check", str(tmp_path / "night"), "--registry", str(registry), "--frc", "nope"]) == 2
    assert main(["formats", "check", str(tmp_path / "night"), "--registry", str(registry),
                 "--product-format", "nope"]) == 2
    assert "unknown product format 'nope'" in capsys.readouterr().err
    with pytest.raises(CheckError, match="does not exist"):
        check_folder(tmp_path / "nowhere", KNOWN, "sdoss")


# ---------------------------------------------------------------------------------- config validate


def test_config_validate_lists_the_formats_folder_and_each_frcs_tables(tmp_path, capsys):
    registry = site_registry(tmp_path, pp=SITE_PP)
    assert main(["--registry", str(registry), "config", "validate"]) == 0
    out = capsys.readouterr().out
    assert f"site formats folder {tmp_path / 'formats.d'} (1 file(s): pp.yaml)" in out
    assert ("sdoss: demo-pp (observatory->observatory, frc_info->frc_info, pp_info->pp_info, init->observations, "
            "feat->sunspots, ppout->pp_output)") in out.splitlines()


def test_config_validate_names_both_files_of_a_clash(tmp_path, capsys):
    registry = site_registry(tmp_path, pp=SITE_PP, zz="files:\n  ppout: night\n")
    assert main(["--registry", str(registry), "config", "validate"]) == 1
    err = capsys.readouterr().err
    assert "zz.yaml: files.ppout is already defined in" in err and "pp.yaml" in err and "formats_dir" in err


def test_config_validate_names_the_file_and_key_of_a_bad_site_kind(tmp_path, capsys):
    bad = SITE_PP.replace("CENTER_Y        float      notnull", "CENTER_Y        floaty     notnull")
    registry = site_registry(tmp_path, pp=bad)
    assert main(["--registry", str(registry), "config", "validate"]) == 1
    err = capsys.readouterr().err
    assert "pp.yaml" in err and "site_ppout" in err and "CENTER_Y" in err and "'floaty'" in err
