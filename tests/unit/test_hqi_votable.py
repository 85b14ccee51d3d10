"""The VOTable of an HQI answer, read the way its clients read it: pyhfc's rules (ElementTree,
VALUES null, typed cells), astropy (pyhfc's ``to_astropy``, SunPy's HELIO client)."""

from __future__ import annotations

import datetime as dt
import io
import math
import random
import re
import warnings
import xml.etree.ElementTree as ET
from decimal import Decimal

import numpy as np
import pytest
from astropy.io.votable import parse
from astropy.io.votable.tree import Field as VOField
from astropy.io.votable.tree import Info, Resource, TableElement, VOTableFile
from astropy.utils.exceptions import AstropyWarning

from hfc_tasks.hqi import votable
from hfc_tasks.hqi.answer import Answer, Field, Result

NS = "{http://www.ivoa.net/xml/VOTable/v1.1}"
EXECUTED = dt.datetime(2026, 12, 2, 13, 0, 5)


# ---------------------------------------------------------------- pyhfc's reading, rule by rule
# (pyhfc.api.votable: INT short/int/long/unsignedByte, FLOAT float/double, boolean t/true/1,
# a char matching the date pattern becomes a datetime, an empty or VALUES-null cell is None,
# an empty char cell is "", INFO value attribute else text, first RESOURCE's INFO wins.)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?$")


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def _convert(datatype, null, cell):
    if cell is None:
        return None if datatype != "char" else ""
    cell = cell.strip()
    if null is not None and cell == null:
        return None
    if datatype in ("short", "int", "long", "unsignedByte"):
        return int(cell) if cell else None
    if datatype in ("float", "double"):
        return float(cell) if cell else None
    if datatype == "boolean":
        return cell.lower() in ("t", "true", "1") if cell else None
    if _DATE.match(cell):
        return dt.datetime.fromisoformat(cell)
    return cell


def pyhfc_read(document: bytes):
    """(info, {table: (fields, rows)}) as pyhfc's parse_response sees a VOTable."""
    root = ET.fromstring(document)
    votable_el = root if _local(root.tag) == "VOTABLE" else next(e for e in root.iter() if _local(e.tag) == "VOTABLE")
    info, tables = {}, {}
    for resource in [c for c in votable_el if _local(c.tag) == "RESOURCE"]:
        for el in [c for c in resource if _local(c.tag) == "INFO"]:
            value = el.get("value")
            info.setdefault(el.get("name"), value if value is not None else (el.text or "").strip())
        for table in [c for c in resource if _local(c.tag) == "TABLE"]:
            fields = []
            for f in [c for c in table if _local(c.tag) == "FIELD"]:
                values = next((c for c in f if _local(c.tag) == "VALUES"), None)
                null = values.get("null") if values is not None else None
                fields.append((f.get("name").upper(), f.get("datatype", "char"), null))
            rows = []
            for tr in [e for e in table.iter() if _local(e.tag) == "TR"]:
                tds = [c for c in tr if _local(c.tag) == "TD"]
                rows.append({n: _convert(t, null, td.text) for (n, t, null), td in zip(fields, tds, strict=False)})
            tables[table.get("name", "").removeprefix("hqi-")] = (fields, rows)
    return info, tables


# ---------------------------------------------------------------- answers
FIELDS = [
    Field("ID_SUNSPOT", "long"),
    Field("FEAT_AREA_DEG2", "double"),
    Field("N", "int"),
    Field("S", "short"),
    Field("F", "float"),
    Field("OK", "boolean"),
    Field("OBSERVAT", "char"),
    Field("DATE_OBS", "char", timestamp=True),
    Field("RUN_DATE", "char", timestamp=True),
    Field("ratio", "double"),  # lower case: written upper case
]
ROWS = [
    (1, 12.25, 7, -3, 0.5, True, "SDO", dt.datetime(2024, 3, 1, 0, 0, 45), dt.date(2024, 3, 2), Decimal("1.25")),
    (2, None, None, None, None, None, None, dt.datetime(2024, 3, 1, 0, 1, 0, 120000), None, None),
    (3, -1e-7, 0, 0, 3.0, False, "", dt.datetime(2024, 3, 1, 23, 59, 59, 999999), dt.date(2024, 3, 2), Decimal("-0.5")),
]
EXPECTED = [
    {"ID_SUNSPOT": 1, "FEAT_AREA_DEG2": 12.25, "N": 7, "S": -3, "F": 0.5, "OK": True, "OBSERVAT": "SDO",
     "DATE_OBS": dt.datetime(2024, 3, 1, 0, 0, 45), "RUN_DATE": dt.datetime(2024, 3, 2), "RATIO": 1.25},
    {"ID_SUNSPOT": 2, "FEAT_AREA_DEG2": None, "N": None, "S": None, "F": None, "OK": None, "OBSERVAT": "",
     "DATE_OBS": dt.datetime(2024, 3, 1, 0, 1, 0, 120000), "RUN_DATE": "", "RATIO": None},
    {"ID_SUNSPOT": 3, "FEAT_AREA_DEG2": -1e-7, "N": 0, "S": 0, "F": 3.0, "OK": False, "OBSERVAT": "",
     "DATE_OBS": dt.datetime(2024, 3, 1, 23, 59, 59, 999999), "RUN_DATE": dt.datetime(2024, 3, 2), "RATIO": -0.5},
]


def answer(rows=ROWS, **kwargs) -> Answer:
    return Answer([Result("VIEW_SP_HQI", FIELDS, list(rows))], "SELECT * FROM hfc.view_sp_hqi", EXECUTED, **kwargs)


def pg_text(value):
    """What psycopg hands over for ``value::text`` (DateStyle ISO)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), repr(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return f"{value.isoformat()} 00:00:00"
    return str(value)


# ---------------------------------------------------------------- the document
def test_document_is_votable_1_1_with_one_resource_per_table():
    two = Answer(
        [
            Result("VIEW_SP_HQI", FIELDS, list(ROWS)),
            Result("VIEW_AR_HQI", [Field("ID_AR", "int")], [(5,)], overflow=True),
        ],
        "SELECT ...",
        EXECUTED,
    )
    document = votable.write(two)
    assert document.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(document)
    assert root.tag == f"{NS}VOTABLE" and root.get("version") == "1.1"
    resources = root.findall(f"{NS}RESOURCE")
    assert len(resources) == 2
    names = ("hqi-VIEW_SP_HQI", "hqi-VIEW_AR_HQI")
    for resource, status, name in zip(resources, ("OK", "OVERFLOW"), names, strict=True):
        infos = {i.get("name"): i.get("value") for i in resource.findall(f"{NS}INFO")}
        assert infos == {"QUERY_STATUS": status, "QUERY_STRING": "SELECT ...", "EXECUTED_AT": "2026-12-02T13:00:05"}
        (table,) = resource.findall(f"{NS}TABLE")
        assert table.get("name") == name
    fields = resources[0].find(f"{NS}TABLE").findall(f"{NS}FIELD")
    assert [(f.get("name"), f.get("datatype"), f.get("arraysize")) for f in fields] == [
        ("ID_SUNSPOT", "long", None), ("FEAT_AREA_DEG2", "double", None), ("N", "int", None),
        ("S", "short", None), ("F", "float", None), ("OK", "boolean", None), ("OBSERVAT", "char", "*"),
        ("DATE_OBS", "char", "*"), ("RUN_DATE", "char", "*"), ("RATIO", "double", None),
    ]
    # integer columns holding a NULL declare it; no XML IDs (names repeat across RESOURCEs)
    nulls = {f.get("name"): f.find(f"{NS}VALUES").get("null") for f in fields if f.find(f"{NS}VALUES") is not None}
    assert nulls == {"N": str(-(2**31)), "S": str(-(2**15))}
    assert b" ID=" not in document


def test_pyhfc_reads_the_values_and_nulls_back():
    info, tables = pyhfc_read(votable.write(answer()))
    assert info == {
        "QUERY_STATUS": "OK",
        "QUERY_STRING": "SELECT * FROM hfc.view_sp_hqi",
        "EXECUTED_AT": "2026-12-02T13:00:05",
    }
    fields, rows = tables["VIEW_SP_HQI"]
    assert rows == EXPECTED
    for row, expected in zip(rows, EXPECTED, strict=True):
        for name, value in row.items():
            assert type(value) is type(expected[name]), name


def test_text_from_postgresql_reads_back_the_same():
    as_text = [tuple(pg_text(v) for v in row) for row in ROWS]
    assert pyhfc_read(votable.write(answer(as_text))) == pyhfc_read(votable.write(answer()))
    assert votable.write(answer(as_text)) == votable.write(answer())


def test_astropy_reads_the_document_strictly_with_nulls_masked():
    document = votable.write(answer())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either: the document is valid VOTable 1.1
        table = parse(io.BytesIO(document), verify="exception").get_first_table().to_table()
    assert table.colnames == [f.name.upper() for f in FIELDS]
    assert list(table["ID_SUNSPOT"]) == [1, 2, 3]
    for name in ("FEAT_AREA_DEG2", "N", "S", "F", "OK", "RATIO"):
        assert list(np.ma.getmaskarray(table[name])) == [False, True, False], name
    assert table["N"][0] == 7 and table["F"][2] == 3.0 and bool(table["OK"][0]) is True
    assert table["FEAT_AREA_DEG2"][2] == -1e-7
    times = ["2024-03-01T00:00:45", "2024-03-01T00:01:00.120000", "2024-03-01T23:59:59.999999"]
    assert list(table["DATE_OBS"]) == times
    assert list(table["RUN_DATE"]) == ["2024-03-02T00:00:00", "", "2024-03-02T00:00:00"]


def test_pyhfc_to_astropy_path_reads_the_first_table():
    # pyhfc's to_astropy: parse(verify="ignore").get_table_by_index(0).to_table()
    table = parse(io.BytesIO(votable.write(answer())), verify="ignore").get_table_by_index(0).to_table()
    assert len(table) == 3 and table.meta["name"] == "hqi-VIEW_SP_HQI"


def test_error_answer_is_one_resource_of_infos():
    document = votable.write(Answer.failed("unknown table 'VIEW_XX_HQI'; the tables are: FRC_INFO", "FROM=VIEW_XX_HQI"))
    root = ET.fromstring(document)
    (resource,) = root.findall(f"{NS}RESOURCE")
    assert resource.find(f"{NS}TABLE") is None
    info, tables = pyhfc_read(document)
    assert tables == {}
    assert info["QUERY_STATUS"] == "ERROR"
    assert info["QUERY_ERROR"] == "unknown table 'VIEW_XX_HQI'; the tables are: FRC_INFO"
    assert info["QUERY_STRING"] == "FROM=VIEW_XX_HQI"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?", info["EXECUTED_AT"])


def test_overflow_and_error_are_per_resource_statuses():
    result = Result("VIEW_SP_HQI", FIELDS, list(ROWS), overflow=True)
    info, tables = pyhfc_read(votable.write(Answer([result], "q", EXECUTED)))
    assert info["QUERY_STATUS"] == "OVERFLOW" and len(tables["VIEW_SP_HQI"][1]) == 3
    failed = Answer([result], "q", EXECUTED, error="statement timeout")
    root = ET.fromstring(votable.write(failed))
    for resource in root.findall(f"{NS}RESOURCE"):
        infos = {i.get("name"): i.get("value") for i in resource.findall(f"{NS}INFO")}
        assert infos["QUERY_STATUS"] == "ERROR" and infos["QUERY_ERROR"] == "statement timeout"


def test_a_table_without_rows_keeps_its_fields():
    info, tables = pyhfc_read(votable.write(answer([])))
    fields, rows = tables["VIEW_SP_HQI"]
    assert rows == [] and [f[0] for f in fields][:2] == ["ID_SUNSPOT", "FEAT_AREA_DEG2"]
    assert len(parse(io.BytesIO(votable.write(answer([])))).get_first_table().array) == 0


HOSTILE = [
    "a < b && c > d ]]> <!-- x --> <![CDATA[y]]> &amp; &#0;",
    "quote \" and ' apostrophe",
    "ctrl \x00\x01\x08\x0b\x0c\x1f\x7f end",
    "tab\tnewline\ncarriage\rreturn",
    "Zürich — 日本語 😀",
    "lone surrogate \ud800 and \ufffe\uffff",
    "</TD></TR><TR><TD>injected",
]


def test_any_text_gives_well_formed_xml_and_reads_back():
    fields = [Field("TXT", "char"), Field("N", "int")]
    rows = [(t, i) for i, t in enumerate(HOSTILE)]
    hostile = Answer(
        [Result("VIEW_<&>\x01_HQI", fields, rows)],
        query="SELECT '<&>\"' \x02 \r\n",
        executed_at=EXECUTED,
        error=None,
    )
    document = votable.write(hostile)
    document.decode("utf-8")  # valid UTF-8 (the surrogate was replaced)
    info, tables = pyhfc_read(document)
    # an attribute's line break reads back as a blank (XML attribute-value normalisation)
    assert info["QUERY_STRING"] == "SELECT '<&>\"' \ufffd  "
    ((name, (_, read)),) = tables.items()
    assert name == "VIEW_<&>\ufffd_HQI"
    assert [r["N"] for r in read] == list(range(len(HOSTILE)))
    got = [r["TXT"] for r in read]
    assert got[0] == HOSTILE[0]
    assert got[1] == HOSTILE[1]
    assert got[2] == "ctrl \ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\x7f end"
    assert got[3] == HOSTILE[3]  # the CR survives (written as &#13;)
    assert got[4] == HOSTILE[4]
    assert got[5] == "lone surrogate \ufffd and \ufffd\ufffd"
    assert got[6] == HOSTILE[6]
    table = parse(io.BytesIO(document), verify="ignore").get_first_table()
    assert list(table.array["TXT"]) == got


def test_a_column_holding_the_null_candidate_gets_another_null():
    fields = [Field("S", "short"), Field("I", "int")]
    rows = [(-(2**15), -(2**31)), (None, None), (2**15 - 1, 5)]
    document = votable.write(Answer([Result("T", fields, rows)], "q", EXECUTED))
    fields_read, read = pyhfc_read(document)[1]["T"]
    assert [f[2] for f in fields_read] == [str(-(2**15) + 1), str(2**31 - 1)]
    assert read == [{"S": -(2**15), "I": -(2**31)}, {"S": None, "I": None}, {"S": 2**15 - 1, "I": 5}]


def test_nan_and_infinities_stay_numbers_and_null_stays_null():
    fields = [Field("X", "double")]
    rows = [(math.nan,), (math.inf,), (-math.inf,), (None,), (0.1,)]
    for given in (rows, [tuple(pg_text(v) for v in row) for row in rows]):
        document = votable.write(Answer([Result("T", fields, given)], "q", EXECUTED))
        assert b"<TD>NaN</TD>" in document and b"<TD>+InF</TD>" in document and b"<TD>-InF</TD>" in document
        values = [r["X"] for r in pyhfc_read(document)[1]["T"][1]]
        assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, None, 0.1]
        column = parse(io.BytesIO(document)).get_first_table().array["X"]
        # astropy's own convention masks a NaN double too (no VALUES null): only the NULL is empty
        assert list(np.ma.getmaskarray(column)) == [True, False, False, True, False]
        assert list(column.data[1:3]) == [math.inf, -math.inf]


def test_times_are_iso_without_zone_microseconds_only_when_set():
    fields = [Field("T", "char", timestamp=True)]
    paris = dt.timezone(dt.timedelta(hours=1))
    rows = [
        (dt.datetime(2024, 3, 1, 12, 0, 0),),
        (dt.datetime(2024, 3, 1, 12, 0, 0, 1),),
        (dt.datetime(2024, 3, 1, 13, 0, 0, tzinfo=paris),),
        (dt.date(1999, 12, 31),),
        ("2024-03-01 12:00:00.000000",),
        ("2024-03-01 12:00:00.5",),
    ]
    document = votable.write(Answer([Result("X", fields, rows)], "q", EXECUTED))
    cells = re.findall(rb"<TD>([^<]*)</TD>", document)
    assert cells == [
        b"2024-03-01T12:00:00", b"2024-03-01T12:00:00.000001", b"2024-03-01T12:00:00",
        b"1999-12-31T00:00:00", b"2024-03-01T12:00:00", b"2024-03-01T12:00:00.5",
    ]
    assert all(isinstance(r["T"], dt.datetime) for r in pyhfc_read(document)[1]["X"][1])


def test_the_kept_table_header_follows_the_nulls_of_each_answer():
    fields = [Field("N", "int"), Field("X", "double")]
    without_null = votable.write(Answer([Result("T", fields, [(1, 1.0)])], "q", EXECUTED))
    with_null = votable.write(Answer([Result("T", fields, [(None, 1.0)])], "q", EXECUTED))
    again = votable.write(Answer([Result("T", fields, [(1, 1.0)])], "q", EXECUTED))
    assert b"<VALUES" not in without_null and again == without_null
    assert pyhfc_read(with_null)[1]["T"][1] == [{"N": None, "X": 1.0}]
    assert pyhfc_read(without_null)[1]["T"][1] == [{"N": 1, "X": 1.0}]
    renamed = votable.write(Answer([Result("U", fields, [(1, 1.0)])], "q", EXECUTED))
    assert b'<TABLE name="hqi-U">' in renamed


def test_rows_must_match_the_fields():
    with pytest.raises(ValueError, match="2 fields"):
        votable.write(Answer([Result("T", [Field("A", "int"), Field("B", "int")], [(1, 2, 3)])], "q"))
    with pytest.raises(ValueError):
        votable.write(Answer([Result("T", [Field("A", "int")], [(1,), (1, 2)])], "q"))


# ---------------------------------------------------------------- speed
def _rows(n: int, seed: int = 12):
    """40 columns as in a VIEW_*_HQI: 20 double, 12 integer, 4 text, 4 times; ~3 % NULL;
    20 rows per observation (they share DATE_OBS)."""
    rnd = random.Random(seed)
    kinds = ["double"] * 20 + ["int"] * 10 + ["long"] * 2 + ["char"] * 4 + ["time"] * 4
    fields = [Field(f"C{i}", "char" if k == "time" else k, timestamp=k == "time") for i, k in enumerate(kinds)]
    base = dt.datetime(2024, 3, 1)
    rows = []
    for r in range(n):
        row = []
        for i, k in enumerate(kinds):
            if i and rnd.random() < 0.03:
                row.append(None)
            elif k == "double":
                row.append(rnd.uniform(-1000, 1000))
            elif k in ("int", "long"):
                row.append(rnd.randint(-30000, 30000))
            elif k == "char":
                row.append(rnd.choice(["SDO/HMI", "continuum", "NOAA 13590", f"ql_{r}.png"]))
            else:
                row.append(base + dt.timedelta(minutes=r // 20, seconds=i, microseconds=rnd.choice([0, 250000])))
        rows.append(tuple(row))
    return fields, rows


def _astropy_default(fields, rows) -> bytes:
    """The same table through astropy's own TABLEDATA path (masked array, its converters)."""
    vot = VOTableFile(version="1.1")
    resource = Resource()
    vot.resources.append(resource)
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    table = TableElement(vot, name="hqi-T")
    resource.tables.append(table)
    for f in fields:
        field = VOField(vot, name=f.name, datatype=f.datatype, arraysize="*" if f.datatype == "char" else None)
        if f.datatype in ("int", "long"):
            field.values.null = votable.INT_RANGE[f.datatype][0]
        table.fields.append(field)
    table.create_arrays(len(rows))
    for f, column in zip(fields, zip(*rows, strict=True), strict=True):
        table.array.mask[f.name] = [v is None for v in column]
        if f.datatype == "char":
            table.array.data[f.name] = [v.isoformat() if isinstance(v, dt.datetime) else (v or "") for v in column]
        elif f.datatype == "double":
            table.array.data[f.name] = [math.nan if v is None else v for v in column]
        else:
            table.array.data[f.name] = [0 if v is None else v for v in column]
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        vot.to_xml(out)
    return out.getvalue()


def test_the_fast_writer_reads_the_same_as_astropy_default_path():
    """The writer formats cells a column at a time instead of astropy's per-cell converters
    (its speed is measured in bench/hqi_service.py, not here): what it writes must read back
    exactly as astropy's own default path's document does."""
    fields, rows = _rows(200)
    ours = votable.write(Answer([Result("T", fields, rows)], "q", EXECUTED))
    theirs = _astropy_default(fields, rows)
    a = parse(io.BytesIO(ours), verify="ignore").get_first_table().array
    b = parse(io.BytesIO(theirs), verify="ignore").get_first_table().array
    for f in fields:
        assert list(np.ma.getmaskarray(a[f.name])) == list(np.ma.getmaskarray(b[f.name])), f.name
        assert list(a[f.name].filled(0) if f.datatype != "char" else a[f.name]) == list(
            b[f.name].filled(0) if f.datatype != "char" else b[f.name]
        ), f.name
