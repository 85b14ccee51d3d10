"""The HQI query service read by clients nobody here wrote, after a real night of the pipeline
(issue 12): one night of ``hfc_nightly`` on the local site (``airflow dags test`` as ``make
demo`` runs it), then, against the site's HQI service:

1. **pyhfc itself**, the HFC's maintained client, installed from PyPI into a virtualenv of its
   own under the site folder (pyhfc declares Python >= 3.12, the project runs 3.11): a script
   (hqi_clients/pyhfc_client.py) run with that Python calls ``HQIClient(wsdl=...)`` and prints
   what it got, typed; the values and their Python types must equal the rows the night loaded,
   read here straight from the catalogue as its owner;
2. **zeep** doing what SunPy's HELIO client (``sunpy.net.helio.hec``) does: a zeep ``Client`` on
   the WSDL URL, ``service.TimeQuery(STARTTIME=Time.isot, ENDTIME=..., FROM=table,
   MAXRECORDS=n)``, the returned element through ``lxml.etree.tostring`` into astropy's
   ``parse_single_table``;
3. **HTTP GET** ``{base}/HelioQueryService`` as the IDL client sends it (the HFC's IDL
   ``hqi_query``: the URL is the parameters concatenated, unencoded, ``FROM=...&STARTTIME=...``,
   fetched with ``wget``, which percent-encodes only what a URL cannot hold: spaces, quotes,
   ``<``/``>``), and with a SolarSoft-style time (a space for the ``T``), parsed with astropy;
4. **hfcviewer's data path**: its own ``load_observation`` (SDO/HMI continuum, nearest) gives
   the row it displays, the quicklook URL is built from ``QCLK_URL``/``QCLK_FNAME`` by pyhfc's
   ``quicklook_url`` and fetched the way the viewer does (``fetch_image``, ``load_image``,
   ``HQIClient.quicklook``): the bytes are the night's archived quicklook (sha256 of the file on
   the archive and in the night's manifest).

How pyhfc reads a VOTable (pyhfc/api/votable.py, Field.convert) fixes what "equal" means here:
short/int/long cells become ``int``, float/double ``float``, a char cell ``YYYY-MM-DDTHH:MM:SS``
a ``datetime``, other char cells ``str`` (stripped); a NULL is ``None`` for the numeric types
and ``""`` for a char field (pyhfc turns every empty char cell into ``""``; the VOTable has no
other way to say NULL for text that pyhfc would read as None).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from helpers import dags_test

from hfc_tasks import products
from hfc_tasks.registry import load_registry

pytestmark = [pytest.mark.site, pytest.mark.slow]

NIGHT = "2024-08-21"  # a night of this module only (other tests use other nights)
DAY = dt.datetime.fromisoformat(NIGHT)
DAY_END = DAY + dt.timedelta(hours=23, minutes=59, seconds=59)
SP, OBS = "VIEW_SP_HQI", "VIEW_OBS_HQI"
HERE = Path(__file__).resolve().parent
CLIENTS = HERE / "hqi_clients"
PYHFC_REQUIREMENTS = CLIENTS / "pyhfc-requirements.txt"
PYHFC_SCRIPT = CLIENTS / "pyhfc_client.py"
PYHFC_MIN_PYTHON = (3, 12)

# PostgreSQL type OIDs as pyhfc/astropy see them through the service's VOTable datatypes.
INTS = {20, 21, 23, 26}
FLOATS = {700, 701, 1700}
BOOLS = {16}
# pyhfc's date pattern (pyhfc/api/votable.py _DATE_PATTERN): such char cells become datetimes.
PYHFC_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?$")


# ---------------------------------------------------------------- what the night loaded


@dataclass
class Table:
    """Rows of one served view as the catalogue holds them (read as the owner role): upper-case
    column names in the view's order, their type OIDs, rows as dicts."""

    name: str
    columns: list[str]
    oids: dict[str, int]
    rows: list[dict]

    def where(self, pred) -> list[dict]:
        return [r for r in self.rows if pred(r)]


@dataclass
class Night:
    sp: Table  # VIEW_SP_HQI rows of the night, ordered by DATE_OBS, ID_SUNSPOT
    obs: Table  # VIEW_OBS_HQI rows of the night, ordered by DATE_OBS, TELESCOP
    frc_info: Table  # all of FRC_INFO
    served: list[str]  # FRC_INFO and every VIEW_*_HQI / VIEW_*_GUI of schema hfc
    quicklooks: dict[str, dict] = field(default_factory=dict)  # manifest entries by file name
    archive_root: Path = Path()


def _read(conn, name: str, sql: str, params=()) -> Table:
    cur = conn.execute(sql, params)
    columns = [d.name.upper() for d in cur.description]
    oids = {d.name.upper(): d.type_code for d in cur.description}
    return Table(name, columns, oids, [dict(zip(columns, row, strict=True)) for row in cur.fetchall()])


@pytest.fixture(scope="module")
def night(site, airflow_db) -> Night:
    """One real night of the pipeline on the local site, and what it loaded."""
    dags_test(NIGHT)
    reg = load_registry()
    site_cfg = reg.site()
    frc = reg.frc("demo-sunspots")
    with psycopg.connect(site["HFC_CATALOGUE_DSN"]) as conn:
        window = (DAY, DAY + dt.timedelta(days=1))
        sp = _read(conn, SP, "select * from hfc.view_sp_hqi where date_obs >= %s and date_obs < %s "
                   "order by date_obs, id_sunspot", window)
        obs = _read(conn, OBS, "select * from hfc.view_obs_hqi where date_obs >= %s and date_obs < %s "
                    "order by date_obs, telescop", window)
        frc_info = _read(conn, "FRC_INFO", "select * from hfc.frc_info order by id_frc_info")
        served = sorted(
            r[0].upper() for r in conn.execute(
                "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'hfc' and c.relkind in ('r', 'v', 'm') "
                "and c.relname ~ '^(frc_info|view_[a-z0-9]+_(hqi|gui))$'"))
    manifest_path = Path(site_cfg.archive_root) / products.manifest_relpath(
        frc.archive_dir, frc.name, products.parse_night(NIGHT))
    manifest = json.loads(manifest_path.read_text())
    quicklooks = {f["name"]: f for f in manifest["files"] if f["kind"] == "quicklook"}
    # The night is what the tests below rely on: sunspots at several times, NULLs of both kinds.
    assert len({r["DATE_OBS"] for r in sp.rows}) >= 4 and len(sp.rows) >= 20, sp.rows
    assert any(r["NOAA_NUMBER"] is None for r in sp.rows)  # an integer NULL
    assert any(r["QCLK_FNAME"] is None for r in obs.rows)  # a text NULL (magnetograms: no quicklook)
    assert quicklooks
    return Night(sp, obs, frc_info, served, quicklooks, Path(site_cfg.archive_root))


# ---------------------------------------------------------------- the service


def _wsdl_answers(url: str, timeout: float = 5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200 and b"definitions" in resp.read()
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def hqi_base(site) -> str:
    """The base URL of the site's HQI service (``hfc site up`` starts it; ``HFC_HQI_URL``)."""
    base = site.get("HFC_HQI_URL")
    assert base, "the local site exports no HFC_HQI_URL: `hfc site up` starts the HQI service"
    wsdl = f"{base}/HelioTavernaService?wsdl"
    deadline = time.monotonic() + 30
    while not _wsdl_answers(wsdl):
        assert time.monotonic() < deadline, f"the site's HQI service does not answer at {wsdl}"
        time.sleep(0.5)
    return base.rstrip("/")


# ---------------------------------------------------------------- pyhfc in its own Python


def _python_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = out.split()
    return int(major), int(minor)


def find_python312() -> str:
    """A Python >= 3.12 of this machine, with venv: on PATH (python3.12, 3.13, 3.14) or pyenv's."""
    candidates = [shutil.which(f"python3.{m}") for m in (12, 13, 14)]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted((str(p) for p in pyenv.glob("3.1[2-9]*/bin/python3")), reverse=True)
    for exe in filter(None, candidates):
        version = _python_version(exe)
        if version is not None and version >= PYHFC_MIN_PYTHON:
            return exe
    pytest.fail("pyhfc needs Python >= 3.12 and this machine has none (looked on PATH and under "
                f"{pyenv}): install one (e.g. pyenv install 3.12) to run pyhfc against the service")


class PyhfcVenv:
    """pyhfc's own virtualenv under the site folder (``<site>/pyhfc-venv``), made when missing or
    when hqi_clients/pyhfc-requirements.txt changed. The install (about a minute) runs in the
    background while the night runs: :meth:`start`, then :meth:`wait` for its python."""

    def __init__(self, venv: Path, log: Path) -> None:
        self.venv, self.log = venv, log
        self.python = venv / "bin" / "python"
        self.stamp = venv / ".requirements.sha256"
        self.want = hashlib.sha256(PYHFC_REQUIREMENTS.read_bytes()).hexdigest()
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def ready(self) -> bool:
        return self.python.exists() and self.stamp.exists() and self.stamp.read_text().strip() == self.want

    def start(self) -> None:
        if self.ready():
            return
        self.base = find_python312()
        # --no-compile: half of pip's time on this machine; Python compiles what pyhfc imports.
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
               "-r", str(PYHFC_REQUIREMENTS)]
        script = f"{shlex.join([self.base, '-m', 'venv', '--clear', str(self.venv)])} && {shlex.join(pip)}"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=out, stderr=subprocess.STDOUT)

    def wait(self) -> Path:
        if self.proc is not None:
            code = self.proc.wait(timeout=900)
            self.proc = None
            output = self.log.read_text(errors="replace")[-4000:]
            assert code == 0, f"pip could not install pyhfc with {self.base}:\n{output}"
            self.stamp.write_text(self.want + "\n")
        assert self.ready()
        return self.python

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pyhfc_venv(site, tmp_path_factory):
    venv = PyhfcVenv(Path(site["HFC_SITE_DIR"]) / "pyhfc-venv", tmp_path_factory.mktemp("pyhfc-venv") / "install.log")
    venv.start()
    yield venv
    venv.stop()  # only when a failure came before the wait


def run_pyhfc(python: Path, wsdl: str, calls: list[dict], tmp: Path) -> dict:
    """Run the client script with pyhfc's Python; suds's WSDL cache (under the temporary folder)
    is a fresh one, so that what is tested is the WSDL the service serves now."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(TMPDIR=str(tmp), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([str(python), str(PYHFC_SCRIPT)], input=json.dumps({"wsdl": wsdl, "calls": calls}),
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _dt(value: dt.datetime) -> dict:
    return {"$dt": value.isoformat()}


def _range(low, high) -> dict:
    return {"$tuple": [_dt(low) if isinstance(low, dt.datetime) else low,
                       _dt(high) if isinstance(high, dt.datetime) else high]}


# Sub-windows of the night. TIME: the time rule is DATE_OBS >= start AND DATE_END <= end: the
# 08:00 observation (DATE_END 08:00:45) ends after 08:00:30, so only the 04:00 one is in.
TIME_START, TIME_END = DAY.replace(hour=4), DAY.replace(hour=8, second=30)
NEAR = DAY.replace(hour=5, minute=10)  # nearest observation: 04:00
AREA_MIN = 10.0


@pytest.fixture(scope="module")
def pyhfc(pyhfc_venv, hqi_base, night, tmp_path_factory) -> dict:
    """Every pyhfc call of the tests below, in one run of pyhfc's Python (its virtualenv made
    while the night ran)."""
    pyhfc_python = pyhfc_venv.wait()
    ids = [r["ID_SUNSPOT"] for r in night.sp.rows[1:8:3]]
    calls = [
        {"id": "ping", "op": "ping"},
        {"id": "tables", "op": "call", "method": "tables"},
        {"id": "fields_sp", "op": "call", "method": "fields", "args": [SP]},
        {"id": "fields_obs_lower", "op": "call", "method": "fields", "args": [OBS.lower()]},
        {"id": "select_night", "op": "call", "method": "select", "args": [SP],
         "kwargs": {"where": {"DATE_OBS": _range(DAY, DAY_END)}, "order_by": "DATE_OBS, ID_SUNSPOT"}},
        {"id": "select_dict", "op": "call", "method": "select", "args": [SP],
         "kwargs": {"what": ["ID_SUNSPOT", "DATE_OBS", "OBSERVAT", "NOAA_NUMBER", "FEAT_AREA_DEG2", "SNAPSHOT"],
                    "where": {"DATE_OBS": _range(DAY, DAY_END), "OBSERVAT": "SDO", "ID_SUNSPOT": ids,
                              "NOAA_NUMBER": None, "FEAT_AREA_DEG2": _range(0.0, None)},
                    "order_by": "ID_SUNSPOT"}},
        {"id": "select_obs", "op": "call", "method": "select", "args": [OBS],
         "kwargs": {"where": {"DATE_OBS": _range(DAY, DAY_END)}, "order_by": "DATE_OBS, TELESCOP"}},
        {"id": "frc_info", "op": "call", "method": "select", "args": ["frc_info"],
         "kwargs": {"order_by": "ID_FRC_INFO"}},
        {"id": "count", "op": "call", "method": "select", "args": [SP],
         "kwargs": {"what": "COUNT(*) AS N", "where": {"DATE_OBS": _range(DAY, DAY_END)}}},
        {"id": "time_query", "op": "call", "method": "time_query", "args": [SP, _dt(TIME_START), _dt(TIME_END)],
         "astropy": True},
        {"id": "query_dict", "op": "call", "method": "query", "args": [SP, _dt(DAY), _dt(DAY_END)],
         "kwargs": {"where": {"FEAT_AREA_DEG2": _range(AREA_MIN, None), "OBSERVAT": "SDO"}}},
        {"id": "query_text", "op": "call", "method": "query", "args": [OBS, _dt(DAY), _dt(DAY_END)],
         "kwargs": {"where": "TELESCOP,Magnetogram,Continuum;QCLK_FNAME,!null;FILENAME,*08_00_00*"}},
        {"id": "query_paged", "op": "call", "method": "query", "args": [SP, _dt(DAY), _dt(DAY_END)],
         "kwargs": {"max_records": 5, "start_index": 5}},
        {"id": "nearest_obs", "op": "call", "method": "nearest", "args": [OBS, _dt(NEAR)],
         "kwargs": {"where": {"TELESCOP": "Continuum"}}},
        {"id": "nearest_sp", "op": "call", "method": "nearest", "args": [SP, _dt(NEAR)],
         "kwargs": {"what": "DATE_OBS"}},
        {"id": "features", "op": "call", "method": "features", "args": ["sunspots", _dt(DAY), _dt(DAY_END)]},
        {"id": "err_table", "op": "call", "method": "select", "args": ["VIEW_NOPE_HQI"]},
        {"id": "err_field", "op": "call", "method": "select", "args": [SP], "kwargs": {"what": "NO_SUCH_FIELD"}},
        {"id": "err_hqi_where", "op": "call", "method": "query", "args": [SP, _dt(DAY), _dt(DAY_END)],
         "kwargs": {"where": "NO_SUCH_FIELD,1"}},
        {"id": "err_not_served", "op": "call", "method": "select", "args": [SP],
         "kwargs": {"what": "COUNT(*)", "where": "(SELECT count(*) FROM hfc.batch) > 0"}},
        {"id": "viewer", "op": "viewer", "dataset": "SDO_HMI_I", "date": NEAR.isoformat(), "direction": "nearest"},
    ]
    out = run_pyhfc(pyhfc_python, f"{hqi_base}/HelioTavernaService?wsdl", calls, tmp_path_factory.mktemp("pyhfc"))
    assert out["pyhfc"] == "0.4.0" and tuple(map(int, out["python"].split(".")[:2])) >= PYHFC_MIN_PYTHON
    return out["results"]


# ---------------------------------------------------------------- expected values, typed


def tag(value):
    """The tagged form of the client script (hqi_clients/pyhfc_client.py: tag)."""
    if value is None:
        return None
    if type(value) is bool:
        return {"bool": value}
    if type(value) is int:
        return {"int": value}
    if type(value) is float:
        return {"float": repr(value)}
    if type(value) is dt.datetime:
        return {"datetime": value.isoformat()}
    if type(value) is str:
        return {"str": value}
    raise TypeError(f"no tag for {value!r}")


def as_pyhfc(value, oid: int):
    """A catalogue value as pyhfc gives it (its Field.convert, typed, dates parsed)."""
    if value is None:
        return None if oid in INTS | FLOATS | BOOLS else ""
    if isinstance(value, bool):
        return value
    if oid in INTS:
        return int(value)
    if oid in FLOATS:
        return float(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
    text = str(value).strip()
    return dt.datetime.fromisoformat(text) if PYHFC_DATE.match(text) else text


def expected_rows(table: Table, rows: list[dict], columns: list[str] | None = None) -> list[list]:
    columns = columns or table.columns
    return [[tag(as_pyhfc(r[c], table.oids[c])) for c in columns] for r in rows]


def only_table(result: dict, name: str) -> dict:
    assert result.get("kind") == "QueryResponse" and result["status"] == "OK", result
    assert [t["name"] for t in result["tables"]] == [name]
    return result["tables"][0]


def field_names(t: dict) -> list[str]:
    return [f[0] for f in t["fields"]]


def untag(value):
    """A tagged value back to a sortable one (ints and floats as numbers, times as ISO text)."""
    if value is None:
        return None
    (kind, v), = value.items()
    return float(v) if kind == "float" else v


def sorted_by(rows: list[list], names: list[str], *keys: str) -> list[list]:
    """Rows in the order of the loaded ones (by DATE_OBS then ID_*), whatever order they came in."""
    idx = [names.index(k) for k in keys]
    return sorted(rows, key=lambda r: tuple((r[i] is None, untag(r[i])) for i in idx))


# ---------------------------------------------------------------- 1. pyhfc


def test_pyhfc_ping_tables_fields(pyhfc, night):
    assert pyhfc["ping"] == {"kind": "value", "value": {"bool": True}}
    tables = pyhfc["tables"]
    assert tables["kind"] == "list"
    assert sorted(i["str"] for i in tables["items"]) == night.served
    assert {"FRC_INFO", SP, OBS, "VIEW_SP_GUI"} <= set(night.served)
    assert pyhfc["fields_sp"] == {"kind": "list", "items": [{"str": c} for c in night.sp.columns]}
    # An unquoted name in any case, as pyhfc sends what its user typed.
    assert pyhfc["fields_obs_lower"] == {"kind": "list", "items": [{"str": c} for c in night.obs.columns]}


def test_pyhfc_select_with_a_where_dict(pyhfc, night):
    # The whole night, every column: values and Python types equal to the loaded rows.
    t = only_table(pyhfc["select_night"], SP)
    assert field_names(t) == night.sp.columns
    assert t["rows"] == expected_rows(night.sp, night.sp.rows)
    # Both kinds of NULL came through: an int NULL as None, a text NULL as pyhfc's "".
    noaa, snap = night.sp.columns.index("NOAA_NUMBER"), night.sp.columns.index("SNAPSHOT")
    assert any(r[noaa] is None for r in t["rows"]) and any(r[snap] == {"str": ""} for r in t["rows"])
    kinds = {f[0]: f[1] for f in t["fields"]}
    assert kinds["ID_SUNSPOT"] in ("short", "int", "long") and kinds["FEAT_AREA_DEG2"] in ("float", "double")
    assert t["rows"][0][night.sp.columns.index("DATE_OBS")] == {"datetime": night.sp.rows[0]["DATE_OBS"].isoformat()}

    # A dict with a range, an equality, a list (IN), a None (IS NULL) and an open range.
    ids = [r["ID_SUNSPOT"] for r in night.sp.rows[1:8:3]]
    what = ["ID_SUNSPOT", "DATE_OBS", "OBSERVAT", "NOAA_NUMBER", "FEAT_AREA_DEG2", "SNAPSHOT"]
    t = only_table(pyhfc["select_dict"], SP)
    assert field_names(t) == what
    want = night.sp.where(lambda r: r["ID_SUNSPOT"] in ids and r["NOAA_NUMBER"] is None)
    assert len(want) == 3
    assert t["rows"] == expected_rows(night.sp, sorted(want, key=lambda r: r["ID_SUNSPOT"]), what)

    # The observations (QCLK_URL/QCLK_FNAME; NULL file names of the magnetograms) and FRC_INFO.
    t = only_table(pyhfc["select_obs"], OBS)
    assert t["rows"] == expected_rows(night.obs, night.obs.rows)
    t = only_table(pyhfc["frc_info"], "FRC_INFO")
    assert t["rows"] == expected_rows(night.frc_info, night.frc_info.rows)


def test_pyhfc_count(pyhfc, night):
    t = only_table(pyhfc["count"], SP)
    assert field_names(t) == ["N"]
    assert t["rows"] == [[{"int": len(night.sp.rows)}]]


def test_pyhfc_time_query_follows_the_time_rule(pyhfc, night):
    t = only_table(pyhfc["time_query"], SP)
    want = night.sp.where(lambda r: r["DATE_OBS"] >= TIME_START and r["DATE_END"] <= TIME_END)
    assert want and {r["DATE_OBS"] for r in want} == {DAY.replace(hour=4)}  # not the 08:00 one
    names = field_names(t)
    assert names == night.sp.columns
    assert sorted_by(t["rows"], names, "DATE_OBS", "ID_SUNSPOT") == expected_rows(night.sp, want)


def test_pyhfc_to_astropy(pyhfc, night):
    """``QueryResponse.to_astropy()``: astropy's reading of the same VOTable (numbers typed,
    NULL numbers masked)."""
    table = pyhfc["time_query"]["astropy"]
    want = night.sp.where(lambda r: r["DATE_OBS"] >= TIME_START and r["DATE_END"] <= TIME_END)
    assert table["class"] == "Table"
    check_astropy_columns(table["columns"], night.sp, want)


def check_astropy_columns(columns: list[dict], source: Table, want: list[dict]) -> None:
    """astropy's columns (as the client script encodes them) against the loaded rows, in the
    order DATE_OBS, then the ID_* columns (the service's stable order of TimeQuery/Query):
    integers as integers and floats as floats, a NULL number masked."""
    assert [c["name"] for c in columns] == source.columns
    ids = [c for c in source.columns if c.startswith("ID_")]
    order = sorted(range(len(want)), key=lambda i: tuple(want[i][k] for k in ["DATE_OBS", *ids]))
    for col in columns:
        name, oid = col["name"], source.oids[col["name"]]
        values = [_untag_numpy(v) for v in col["values"]]
        expect = [want[i][name] for i in order]
        if oid in INTS:
            assert col["kind"] == "i", col
            assert values == [None if v is None else {"int": int(v)} for v in expect], name
        elif oid in FLOATS:
            assert col["kind"] == "f", col
            assert values == [None if v is None else {"float": repr(float(v))} for v in expect], name
        else:
            # Text and times are strings; a NULL text is astropy's "" (an empty char cell).
            assert col["kind"] in ("U", "O"), col
            shown = ["" if v is None else v.isoformat() if isinstance(v, dt.datetime) else v for v in expect]
            assert values == [{"str": s} for s in shown], name


def _untag_numpy(v):
    if isinstance(v, dict) and "numpy" in v:
        return v["value"]
    return v


def test_pyhfc_query_with_an_hqi_where(pyhfc, night):
    t = only_table(pyhfc["query_dict"], SP)
    want = night.sp.where(lambda r: r["FEAT_AREA_DEG2"] >= AREA_MIN and r["OBSERVAT"] == "SDO")
    assert 0 < len(want) < len(night.sp.rows)
    names = field_names(t)
    assert sorted_by(t["rows"], names, "DATE_OBS", "ID_SUNSPOT") == expected_rows(night.sp, want)

    # The HQI syntax as text: OR of values, !null, *x* (LIKE): the continuum of 08:00 only.
    t = only_table(pyhfc["query_text"], OBS)
    want = night.obs.where(lambda r: r["QCLK_FNAME"] is not None and "08_00_00" in r["FILENAME"])
    assert len(want) == 1
    assert t["rows"] == expected_rows(night.obs, want)

    # MAXRECORDS/STARTINDEX: the second page of five, in the service's order (time, then IDs).
    t = pyhfc["query_paged"]
    assert t["status"] == "OVERFLOW", t["info"]
    rows = t["tables"][0]["rows"]
    assert rows == expected_rows(night.sp, night.sp.rows[5:10])


def test_pyhfc_nearest(pyhfc, night):
    got = pyhfc["nearest_obs"]
    assert got["kind"] == "Row"
    want = night.obs.where(lambda r: r["TELESCOP"] == "Continuum" and r["DATE_OBS"] == DAY.replace(hour=4))
    assert len(want) == 1
    assert got["row"] == dict(zip(night.obs.columns, expected_rows(night.obs, want)[0], strict=True))
    assert pyhfc["nearest_sp"] == {"kind": "Row", "row": {"DATE_OBS": {"datetime": DAY.replace(hour=4).isoformat()}}}


def test_pyhfc_features(pyhfc, night):
    t = only_table(pyhfc["features"], SP)
    names = field_names(t)
    dates = [r[names.index("DATE_OBS")]["datetime"] for r in t["rows"]]
    assert dates == sorted(dates)  # features() orders by DATE_OBS
    assert sorted_by(t["rows"], names, "DATE_OBS", "ID_SUNSPOT") == expected_rows(night.sp, night.sp.rows)


def test_pyhfc_errors_are_hqi_query_errors_with_the_service_message(pyhfc):
    def failure(result):
        assert "error" in result, result
        assert "HQIQueryError" in result["error"]["classes"], result
        return result["error"]["message"]

    message = failure(pyhfc["err_table"])
    assert "VIEW_NOPE_HQI" in message and SP in message  # names the table and lists the served ones
    message = failure(pyhfc["err_field"])
    assert "no_such_field" in message.lower() and "does not exist" in message
    message = failure(pyhfc["err_hqi_where"])
    assert "NO_SUCH_FIELD" in message
    # A fragment reaching a table that is not served is refused by the database (read-only role).
    message = failure(pyhfc["err_not_served"])
    assert "permission denied" in message and "getTableNames" in message


# ---------------------------------------------------------------- 4. hfcviewer's data path


def test_hfcviewer_opens_the_archived_quicklook_of_the_night(pyhfc, night):
    got = pyhfc["viewer"]
    assert "error" not in got, got
    assert got["table"] == OBS
    # The observation the viewer shows: the SDO/HMI continuum nearest to the date, with the
    # fields it asks (its OBS_FIELDS), equal to the loaded row.
    loaded = night.obs.where(lambda r: r["TELESCOP"] == "Continuum" and r["DATE_OBS"] == DAY.replace(hour=4))
    assert len(loaded) == 1
    loaded = loaded[0]
    row = got["row"]
    assert row is not None and set(row) >= {"DATE_OBS", "QCLK_URL", "QCLK_FNAME", "R_SUN", "NAXIS1"}
    assert row == {k: tag(as_pyhfc(loaded[k], night.obs.oids[k])) for k in row}
    # The URL the viewer builds is the catalogue's QCLK_URL / QCLK_FNAME, served over http.
    assert got["url"] == f"{loaded['QCLK_URL'].rstrip('/')}/{loaded['QCLK_FNAME']}"
    assert got["url"].startswith("http://")
    # Its bytes are the archived quicklook of the night.
    entry = night.quicklooks[loaded["QCLK_FNAME"]]
    on_archive = hashlib.sha256((night.archive_root / entry["archive_path"]).read_bytes()).hexdigest()
    assert got["sha256"] == entry["sha256"] == on_archive
    assert got["load_image"] is not None and got["load_image"]["format"] == "JPEG"
    assert got["quicklook"] == got["load_image"]


# ---------------------------------------------------------------- 2. zeep, as SunPy's HELIO client


def test_zeep_time_query_as_sunpy_does(hqi_base, night):
    import zeep
    from astropy.io.votable import parse
    from astropy.io.votable.table import parse_single_table
    from astropy.time import Time
    from lxml import etree

    client = zeep.Client(f"{hqi_base}/HelioTavernaService?wsdl")
    # SunPy's HECClient.search: STARTTIME/ENDTIME as astropy Time.isot, FROM the table name.
    start, end = Time(TIME_START.isoformat()), Time(TIME_END.isoformat())
    results = client.service.TimeQuery(STARTTIME=start.isot, ENDTIME=end.isot, FROM=SP, MAXRECORDS=500)
    data = etree.tostring(results)
    table = parse_single_table(io.BytesIO(data))
    want = night.sp.where(lambda r: r["DATE_OBS"] >= TIME_START and r["DATE_END"] <= TIME_END)
    check_astropy_columns(_astropy_columns(table.to_table()), night.sp, want)
    infos = {i.name: i.value for i in parse(io.BytesIO(data)).resources[0].infos}
    assert infos["QUERY_STATUS"] == "OK"

    # getTableNames, the way SunPy lists the tables (votable_handler(...).array).
    names = parse_single_table(io.BytesIO(etree.tostring(client.service.getTableNames()))).array
    assert sorted(str(n[0]) for n in names) == night.served

    # MAXRECORDS smaller than the answer: that many rows, and QUERY_STATUS OVERFLOW.
    results = client.service.TimeQuery(STARTTIME=Time(DAY.isoformat()).isot, ENDTIME=Time(DAY_END.isoformat()).isot,
                                       FROM=SP, MAXRECORDS=3)
    data = etree.tostring(results)
    assert len(parse_single_table(io.BytesIO(data)).array) == 3
    assert {i.name: i.value for i in parse(io.BytesIO(data)).resources[0].infos}["QUERY_STATUS"] == "OVERFLOW"

    # Query with an HQI WHERE, and an unknown table: an ERROR status the user can read.
    results = client.service.Query(STARTTIME=[DAY.isoformat()], ENDTIME=[DAY_END.isoformat()], FROM=[OBS],
                                   WHERE="TELESCOP,Continuum", MAXRECORDS=100)
    table = parse_single_table(io.BytesIO(etree.tostring(results))).to_table()
    assert sorted(table["DATE_OBS"].tolist()) == sorted(
        r["DATE_OBS"].isoformat() for r in night.obs.rows if r["TELESCOP"] == "Continuum")
    results = client.service.TimeQuery(STARTTIME=start.isot, ENDTIME=end.isot, FROM="VIEW_NOPE_HQI")
    infos = {i.name: i.value for i in parse(io.BytesIO(etree.tostring(results))).resources[0].infos}
    assert infos["QUERY_STATUS"] == "ERROR" and "VIEW_NOPE_HQI" in infos["QUERY_ERROR"]


def _astropy_columns(table) -> list[dict]:
    """An astropy Table in the client script's encoding (astropy_table)."""
    cols = []
    for name in table.colnames:
        col = table[name]
        mask = getattr(col, "mask", None)
        values = []
        for i, v in enumerate(col):
            if mask is not None and bool(mask[i]):
                values.append(None)
                continue
            v = v.item() if hasattr(v, "item") else v
            values.append(tag(v.decode() if isinstance(v, bytes) else v))
        cols.append({"name": name, "kind": col.dtype.kind, "values": values})
    return cols


# ---------------------------------------------------------------- 3. HTTP GET, as the IDL client


def idl_url(base: str, **params: str) -> str:
    """The URL of the IDL client's hqi_query: ``base + '/HelioQueryService?' + 'FROM=' + from``
    then ``'&NAME=' + value`` for each keyword given, concatenated unencoded; wget (which
    fetches it) percent-encodes the characters a URL cannot hold (space, quotes, <, >) and
    sends the rest (``; , / * ! ' =``) as they are."""
    url = f"{base}/HelioQueryService?FROM={params.pop('FROM')}"
    for name, value in params.items():
        url += f"&{name}={value}"
    return quote(url, safe=":/?&=;,*!'()+$@~%#[]")


def http_votable(url: str):
    from astropy.io.votable import parse

    with urllib.request.urlopen(url, timeout=60) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() in ("text/xml", "application/xml", "application/x-votable+xml")
        data = resp.read()
    votable = parse(io.BytesIO(data))
    infos = {i.name: i.value for i in votable.resources[0].infos}
    return votable, infos


def test_http_get_as_the_idl_client_sends_it(hqi_base, night):
    # FROM, STARTTIME, ENDTIME, WHERE in the HQI syntax (';' AND, 'a/' open range).
    url = idl_url(hqi_base, FROM=SP, STARTTIME=DAY.isoformat(), ENDTIME=DAY_END.isoformat(),
                  WHERE=f"OBSERVAT,SDO;FEAT_AREA_DEG2,{AREA_MIN}/")
    assert ";" in url and "," in url  # sent as the IDL client sends them, not percent-encoded
    votable, infos = http_votable(url)
    assert infos["QUERY_STATUS"] == "OK", infos
    want = night.sp.where(lambda r: r["FEAT_AREA_DEG2"] >= AREA_MIN and r["OBSERVAT"] == "SDO")
    assert 0 < len(want) < len(night.sp.rows)
    table = votable.get_first_table()
    assert table.name == f"hqi-{SP}"
    check_astropy_columns(_astropy_columns(table.to_table()), night.sp, want)

    # WHAT, SQLWHERE, ORDER_BY, LIMIT: the three largest spots of the night after 08:00.
    url = idl_url(hqi_base, FROM=SP, STARTTIME=DAY.isoformat(), ENDTIME=DAY_END.isoformat(),
                  SQLWHERE=f"DATE_OBS > '{NIGHT} 08:00:00' AND FEAT_AREA_DEG2 > 1",
                  WHAT="ID_SUNSPOT,DATE_OBS,FEAT_AREA_DEG2,NOAA_NUMBER",
                  ORDER_BY="FEAT_AREA_DEG2 DESC", LIMIT="3")
    assert "%20" in url and "%3E" in url  # what wget encodes
    votable, infos = http_votable(url)
    assert infos["QUERY_STATUS"] == "OVERFLOW", infos  # more than LIMIT rows matched
    got = votable.get_first_table().to_table()
    assert got.colnames == ["ID_SUNSPOT", "DATE_OBS", "FEAT_AREA_DEG2", "NOAA_NUMBER"]
    top = sorted(night.sp.where(lambda r: r["DATE_OBS"] > DAY.replace(hour=8) and r["FEAT_AREA_DEG2"] > 1),
                 key=lambda r: -r["FEAT_AREA_DEG2"])[:3]
    assert got["ID_SUNSPOT"].tolist() == [r["ID_SUNSPOT"] for r in top]
    assert got["FEAT_AREA_DEG2"].tolist() == [r["FEAT_AREA_DEG2"] for r in top]
    assert got["DATE_OBS"].tolist() == [r["DATE_OBS"].isoformat() for r in top]
    assert got["NOAA_NUMBER"].mask.tolist() == [True, True, True]  # NULL, masked

    # SolarSoft's form of the times (a space for the 'T', as its HFC routines pass them), the
    # time rule, MAXRECORDS/STARTINDEX, and WHERE with *x* (LIKE) and null.
    url = idl_url(hqi_base, FROM=OBS, STARTTIME=f"{NIGHT} 04:00:00", ENDTIME=f"{NIGHT} 12:00:59",
                  WHERE="FILENAME,*hmi*;QCLK_FNAME,null", MAXRECORDS="2", STARTINDEX="1")
    votable, infos = http_votable(url)
    assert infos["QUERY_STATUS"] == "OK", infos
    got = votable.get_first_table().to_table()
    mags = [r for r in night.obs.rows
            if r["QCLK_FNAME"] is None and DAY.replace(hour=4) <= r["DATE_OBS"] <= DAY.replace(hour=12)]
    assert len(mags) == 3
    assert got["DATE_OBS"].tolist() == [r["DATE_OBS"].isoformat() for r in mags[1:3]]
    assert got["TELESCOP"].tolist() == ["Magnetogram", "Magnetogram"]

    # A WHERE naming no column of the table: QUERY_STATUS ERROR naming it.
    _, infos = http_votable(idl_url(hqi_base, FROM=SP, STARTTIME=DAY.isoformat(), ENDTIME=DAY_END.isoformat(),
                                    WHERE="NO_SUCH_FIELD,1"))
    assert infos["QUERY_STATUS"] == "ERROR" and "NO_SUCH_FIELD" in infos["QUERY_ERROR"]
