"""Readers of HFC product files: the real samples, their quirks, and located errors."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from hfc_tasks.catalogue.formats import KNOWN, FormatError, load_formats, parse_spec
from hfc_tasks.catalogue.readers import ProductFileError, read_product

FRC_INFO = KNOWN.kinds["frc_info"]
OBSERVATORY = KNOWN.kinds["observatory"]
SDOSS_INIT = KNOWN.kinds["init"]
SDOSS_FEAT = KNOWN.kinds["sdoss_feat"]

SAMPLES = Path(__file__).parents[1] / "data" / "hfc_samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def errors_of(name: str, text: str | bytes, spec) -> ProductFileError:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ProductFileError) as info:
        read_product(name, data, spec)
    return info.value


# ---------------------------------------------------------------------------- real samples


@pytest.mark.parametrize(
    "name, rows",
    [
        ("sdoss_106_frc_info.csv", 1),
        ("spoca_300_frc_info.csv", 4),
        ("rabat3_203_frc_info.csv", 1),
        ("sdoss_106_observatory.csv", 2),
        ("spoca_300_observatory.csv", 4),
        ("rabat3_203_observatory.csv", 4),
    ],
)
def test_real_samples_parse_without_warnings(name, rows):
    data = sample(name)
    assert b"\r\n" in data  # the samples really are CRLF
    spec = FRC_INFO if "frc_info" in name else OBSERVATORY
    table = read_product(name, data, spec)
    assert len(table) == rows
    assert table.lines.tolist() == list(range(2, rows + 2))
    assert table.warnings == [] and table.unknown_columns == []
    assert list(table.frame.columns) == [c.target for c in spec.stored_columns]
    # Nothing of the line ends leaks into values.
    for value in table.frame.to_numpy().ravel():
        assert not isinstance(value, str) or ("\r" not in value and "\n" not in value)


def test_sdoss_observatory_values_and_spectral_domain():
    table = read_product("sdoss_106_observatory.csv", sample("sdoss_106_observatory.csv"), OBSERVATORY)
    rows = table.frame.to_dict("records")
    assert rows[0]["id_observatory"] == 1 and rows[0]["telescop"] == "Continuum"
    assert rows[0]["wavemin"] == 617.133 and rows[0]["waveunit"] == "nm"
    assert rows[1]["spectral_name"] == "Line_of_sight magnetic field"
    assert rows[0]["comment"] is None  # "NULL"
    # Columns this older file lacks are known optional ones: no warning, not stored anyway.
    assert "obsinst_key" not in table.frame.columns


def test_rabat3_id_observat_variant_and_missing_final_newline():
    data = sample("rabat3_203_observatory.csv")
    assert not data.endswith(b"\n")
    table = read_product("rabat3_203_observatory.csv", data, OBSERVATORY)
    assert table.frame["id_observatory"].tolist() == [1, 2, 3, 4]
    last = table.frame.iloc[-1]
    assert last["observat"] == "STEREO_B" and last["comment"] == "60 sec. average data produced by the GSFC"
    assert last["spectral_name"] == "RADIO"


def test_spoca_empty_fields_are_null():
    table = read_product("spoca_300_observatory.csv", sample("spoca_300_observatory.csv"), OBSERVATORY)
    assert table.frame["comment"].isna().all()
    assert table.frame.loc[3, "wavemin"] == 19.3


def test_frc_info_line_with_extra_empty_trailing_field():
    # "...;DOI: ...;;": 13 fields for a 12-column header (empty URL + a trailing ";").
    table = read_product("rabat3_203_frc_info.csv", sample("rabat3_203_frc_info.csv"), FRC_INFO)
    row = table.frame.iloc[0]
    assert (row["code"], row["version"], row["feature_name"]) == ("RABAT3", "2.0.3", "TYPE III")
    assert row["reference"] == "DOI: 10.1029/2008SW000425"


def test_crlf_lf_and_final_newline_give_the_same_frame():
    data = sample("spoca_300_observatory.csv")
    base = read_product("a_1_observatory.csv", data, OBSERVATORY).frame
    for variant in (data.replace(b"\r\n", b"\n"), data + b"\r\n", data.replace(b"\r\n", b"\n") + b"\n\n"):
        pd.testing.assert_frame_equal(read_product("a_1_observatory.csv", variant, OBSERVATORY).frame, base)


def test_column_order_does_not_matter():
    data = sample("sdoss_106_frc_info.csv").decode().split("\r\n")
    cols = [line.split(";") for line in data if line]
    reordered = "\n".join(";".join(reversed(c)) for c in cols)
    a = read_product("x_1_frc_info.csv", sample("sdoss_106_frc_info.csv"), FRC_INFO).frame
    b = read_product("x_1_frc_info.csv", reordered.encode(), FRC_INFO).frame
    pd.testing.assert_frame_equal(a, b)


# ---------------------------------------------------------------------------- format quirks

OBS_HEADER = "ID_OBSERVATORY;OBSERVAT;INSTRUME;TELESCOP;UNITS;WAVEMIN;WAVEMAX;WAVENAME;WAVEUNIT;COMMENT"


def test_sosoft_trailing_semicolon_and_backslash_n_nulls():
    text = OBS_HEADER + ";\r\n1;Meudon;Spectroheliograph;\\N;Counts;656.28;\\N;Halpha;nm;\\N;\r\n"
    table = read_product("sosoft_10_meu1_observatory.csv", text.encode(), OBSERVATORY)
    row = table.frame.iloc[0]
    assert row["telescop"] is None and math.isnan(row["wavemax"]) and row["comment"] is None
    assert row["wavename"] == "Halpha"


def test_quoted_fields_with_separator_and_newline_keep_line_numbers():
    text = (
        OBS_HEADER + "\n"
        '1;SDO;HMI;"Conti;nuum";Counts;617.133;617.133;Fe I;nm;"two\nlines"\n'
        "2;SDO;HMI;Mag;Gauss;oops;617.133;Fe I;nm;x\n"
    )
    err = errors_of("q_1_observatory.csv", text, OBSERVATORY)
    assert (err.line, err.column) == (4, "WAVEMIN")
    ok = text.replace("oops", "617.133")
    table = read_product("q_1_observatory.csv", ok.encode(), OBSERVATORY)
    assert table.frame.loc[0, "telescop"] == "Conti;nuum" and table.frame.loc[0, "comment"] == "two\nlines"
    assert table.lines.tolist() == [2, 4]


def test_blank_lines_are_skipped_and_line_numbers_stay_true():
    text = OBS_HEADER + "\n\n1;SDO;HMI;C;Counts;1;1;a;nm;\n\n2;SDO;HMI;M;Gauss;2;x;a;nm;\n"
    err = errors_of("b_1_observatory.csv", text, OBSERVATORY)
    assert (err.line, err.column) == (5, "WAVEMAX")


def test_unknown_columns_are_reported_not_fatal():
    text = OBS_HEADER + ";SOLAR_B0;WHATEVER\n1;SDO;HMI;C;Counts;1;1;a;nm;;0.5;z\n"
    table = read_product("u_1_observatory.csv", text.encode(), OBSERVATORY)
    assert table.unknown_columns == ["SOLAR_B0", "WHATEVER"]
    assert any("SOLAR_B0" in w and "WHATEVER" in w for w in table.warnings)


def test_known_extra_columns_are_not_warned_about():
    table = read_product("x_observatory.csv", sample("rabat3_203_observatory.csv"), OBSERVATORY)
    assert table.warnings == []  # OBSINST_KEY, FREQMIN, FREQMAX, FREQUNIT, OBS_CAT are known


def test_latin1_file_is_read_with_a_warning():
    text = OBS_HEADER + "\n1;Nançay;NRH;NRH;K;1;1;a;m;\n"
    table = read_product("l_1_observatory.csv", text.encode("latin-1"), OBSERVATORY)
    assert table.frame.loc[0, "observat"] == "Nançay"
    assert any("Latin-1" in w for w in table.warnings)


def test_header_only_file_has_no_rows():
    table = read_product("h_1_observatory.csv", (OBS_HEADER + "\r\n").encode(), OBSERVATORY)
    assert len(table) == 0 and list(table.frame.columns) == [c.target for c in OBSERVATORY.stored_columns]


def test_non_finite_numbers_become_null_in_nullable_columns_only():
    table = read_product("n_observatory.csv", (OBS_HEADER + "\n1;S;I;T;U;1;NaN;a;nm;\n").encode(), OBSERVATORY)
    assert math.isnan(table.frame.loc[0, "wavemax"]) and any("non-finite" in w for w in table.warnings)
    err = errors_of("n_observatory.csv", OBS_HEADER + "\n1;S;I;T;U;inf;1;a;nm;\n", OBSERVATORY)
    assert (err.line, err.column) == (2, "WAVEMIN")


# ---------------------------------------------------------------------------- located errors


@pytest.mark.parametrize(
    "text, line, column, words",
    [
        ("ID_OBSERVATORY;OBSERVAT;UNITS;WAVEMIN\n1;SDO;C;1\n", 1, "INSTRUME", "required column missing"),
        (OBS_HEADER + "\n1;SDO;HMI;C;Counts;six;1;a;nm;\n", 2, "WAVEMIN", "not a number: 'six'"),
        (
            OBS_HEADER + "\n1;SDO;HMI;C;Counts;1;1;a;nm;\n2.5;SDO;HMI;C;Counts;1;1;a;nm;\n",
            3,
            "ID_OBSERVATORY",
            "not an integer",
        ),
        (OBS_HEADER + "\n99999999999;SDO;HMI;C;Counts;1;1;a;nm;\n", 2, "ID_OBSERVATORY", "out of range"),
        (OBS_HEADER + "\n1;NULL;HMI;C;Counts;1;1;a;nm;\n", 2, "OBSERVAT", "NOT NULL"),
        (OBS_HEADER + "\n1;;HMI;C;Counts;1;1;a;nm;\n", 2, "OBSERVAT", "NOT NULL"),
        (OBS_HEADER + "\n1;SDO;HMI;C;Counts;\\N;1;a;nm;\n", 2, "WAVEMIN", "NOT NULL"),  # numbers too
        (OBS_HEADER + "\n1;SDO;HMI;C;Counts;1;1;a;nanometres2;\n", 2, "WAVEUNIT", "longer than 10"),
        (
            OBS_HEADER + "\n1;SDO;HMI;C;Counts;1;1;a;nm;\n1;SDO;HMI;M;G;1;1;a;nm;\n",
            3,
            "ID_OBSERVATORY",
            "duplicate id 1",
        ),
        (OBS_HEADER + "\n1;SDO;HMI;C;Counts;1;1;a\n", 2, None, "8 fields, the header has 10"),
        (OBS_HEADER + "\n1;SDO;HMI;C;Counts;1;1;a;nm;x;y;z\n", 2, None, "12 fields"),
        ("ID_OBSERVATORY;OBSERVAT;OBSERVAT;INSTRUME;UNITS;WAVEMIN\n", 1, "OBSERVAT", "named twice"),
        ("", 1, None, "empty file"),
    ],
)
def test_malformed_observatory_gives_located_error(text, line, column, words):
    err = errors_of("bad_1_observatory.csv", text, OBSERVATORY)
    assert (err.file, err.line, err.column) == ("bad_1_observatory.csv", line, column)
    assert words in err.reason
    message = str(err)
    assert "bad_1_observatory.csv" in message and f"line {line}" in message and words in message
    if column:
        assert f"column {column}" in message


INIT_HEADER = "ID_OBSERVATIONS;OBSERVATORY_ID;DATE_OBS;DATE_END;FILENAME;LOC_FILENAME;QCLK_FNAME"


@pytest.mark.parametrize(
    "date, words",
    [
        ("2024-02-30T00:00:00", "impossible date"),
        ("2023-02-29T12:00:00", "impossible date"),
        ("2024-03-01T24:00:00", "impossible date"),
        ("01/03/2024 00:00", "not a date"),
        ("2024-03-01", "not a date"),
    ],
)
def test_bad_dates_are_located(date, words):
    text = (
        f"{INIT_HEADER}\r\n1;1;2024-03-01T00:00:00;2024-03-01T00:00:45;f;/f;q.jpg\r\n"
        f"2;2;{date};2024-03-01T00:00:45;f;/f;\\N"
    )
    err = errors_of("sdoss_106_20240301T000000_sdo_init.csv", text, SDOSS_INIT)
    assert (err.line, err.column) == (3, "DATE_OBS") and words in err.reason and date in err.reason


def test_init_dates_and_extras():
    text = (
        INIT_HEADER + ";FILE_SIZE;DATA_TYPE;PROCESSING_LVL\n"
        "1;1;2024-03-01T00:00:00;2024-03-01T00:00:45.5;f;/f;q.jpg;123;int;1.5\n"
    )
    table = read_product("i.csv", text.encode(), SDOSS_INIT)
    row = table.frame.iloc[0]
    assert row["date_obs"] == pd.Timestamp("2024-03-01T00:00:00")
    assert row["date_end"] == pd.Timestamp("2024-03-01T00:00:45.5")
    assert "file_size" not in table.frame.columns and table.warnings == []
    assert row["naxis1"] is pd.NA and row["qclk_url"] is None  # optional columns absent: NULL


def test_all_problems_of_a_file_are_listed():
    text = OBS_HEADER + "\n1;SDO;HMI;C;Counts;x;1;a;nm;\n2;;HMI;C;Counts;1;y;a;nm;\n"
    err = errors_of("m_1_observatory.csv", text, OBSERVATORY)
    where = {(p.line, p.column) for p in err.problems}
    assert where == {(2, "WAVEMIN"), (3, "OBSERVAT"), (3, "WAVEMAX")}
    assert "2 more problem(s)" in str(err)


def test_sdoss_feat_header_is_complete():
    header = ";".join(c.name for c in SDOSS_FEAT.columns)
    assert len(SDOSS_FEAT.columns) == 85
    err = errors_of("f_feat.csv", header.replace("RS_LENGTH;", ""), SDOSS_FEAT)
    assert (err.line, err.column) == (1, "RS_LENGTH")


# ---------------------------------------------------------------------------- specs as data


def test_a_new_kind_is_data():
    spec = parse_spec(
        "track",
        "sunspots_tracking",
        """
        ID_SUNSPOT  int       notnull  ref=feat   # local to the feat file
        TRACK_ID    int       notnull
        PHENOM      int
        RUN_DATE    datetime  notnull
        TRACK_FILENAME text(150) extra alias=TRACK_FNAME
        """,
    )
    assert spec.depends_on == {"feat"}
    assert [(c.target, c.ref) for c in spec.columns if c.ref] == [("id_sunspot", "feat")]
    table = read_product("t.csv", b"TRACK_ID;ID_SUNSPOT;RUN_DATE;TRACK_FNAME\n7;3;2024-03-01T00:00:00;t.csv\n", spec)
    assert table.frame.to_dict("records")[0]["track_id"] == 7 and table.warnings == []
    with pytest.raises(ValueError, match="unknown flag"):
        parse_spec("x", "x", "A int nonull")
    with pytest.raises(ValueError, match="unknown type"):
        parse_spec("x", "x", "A integer")


def test_formats_registry():
    sdoss = KNOWN.resolve("sdoss")
    assert list(sdoss) == ["observatory", "frc_info", "init", "feat", "track"]
    assert sdoss["feat"] is SDOSS_FEAT
    assert "pp" not in sdoss


# ---------------------------------------------------------------------------- formats.yaml


def _formats(tmp_path, text: str):
    path = tmp_path / "formats.yaml"
    path.write_text(text)
    return load_formats(path)


BASE = """
files:
  frc_info: code
  feat: observation
metadata_tables:
  frc_info: [code, version, feature_name, institut]
kinds:
  frc_info:
    table: frc_info
    columns: |
      ID_FRC_INFO int id
      CODE text(100) notnull
  thing_feat:
    table: things
    columns: |
      ID_THING int id
      FRC_INFO_ID int notnull ref=frc_info
formats:
  thing:
    frc_info: frc_info
    feat: thing_feat
"""


def test_formats_yaml_is_data_checked_when_read(tmp_path):
    known = _formats(tmp_path, BASE)
    assert list(known.resolve("thing")) == ["frc_info", "feat"]
    assert known.kinds["frc_info"].is_metadata and not known.kinds["thing_feat"].is_metadata
    with pytest.raises(FormatError, match="unknown flag 'refs=frc_info'"):
        _formats(tmp_path, BASE.replace("ref=frc_info", "refs=frc_info"))
    with pytest.raises(FormatError, match="point into 'init' files, which this format does not load"):
        _formats(tmp_path, BASE.replace("ref=frc_info", "ref=init"))
    with pytest.raises(FormatError, match="unknown spec 'thing_fet'"):
        _formats(tmp_path, BASE.replace("feat: thing_feat", "feat: thing_fet"))
    with pytest.raises(FormatError, match="unknown product format 'other'"):
        known.resolve("other")
    # The registry's per-FRC products override the preset; "none" drops a kind.
    assert list(known.resolve("thing", {"feat": "none"})) == ["frc_info"]
    with pytest.raises(FormatError, match="points? into"):
        known.resolve("thing", {"frc_info": "none"})


def test_shipped_formats_cover_every_product_of_the_hfc():
    tables = {fmt: {k: s.table for k, s in KNOWN.resolve(fmt).items()} for fmt in KNOWN.formats}
    assert tables["sdoss"] == {"observatory": "observatory", "frc_info": "frc_info", "init": "observations",
                               "feat": "sunspots", "track": "sunspots_tracking"}
    assert tables["spoca-ar"]["feat"] == "activeregions" and tables["spoca-ch"]["track"] == "coronalholes_tracking"
    assert tables["sosoft"] == {"obs": "observations", "frc": "frc_info", "pp": "pp_output", "feat": "filaments"}
    assert tables["rabat3"]["feat"] == "type_iii" and tables["trackfil"] == {"track": "filaments_tracking"}
